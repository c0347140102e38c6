package scanner_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestUdevRulesCoverModels keeps systemd/60-gated-scanners.rules in step
// with the model files: every USB id a model presents is given to the
// gated user, and every rule line is well formed.
func TestUdevRulesCoverModels(t *testing.T) {
	b, err := os.ReadFile("../../systemd/60-gated-scanners.rules")
	if err != nil {
		t.Fatal(err)
	}
	pair := regexp.MustCompile(`^\s*([A-Z_]+(?:\{[^}]+\})?)\s*(==|!=|\+=|=|:=)\s*"([^"]*)"\s*$`)
	var rules []string
	for n, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		for _, kv := range strings.Split(line, ",") {
			if !pair.MatchString(kv) {
				t.Errorf("line %d: %q is not KEY op \"value\"", n+1, kv)
			}
		}
		rules = append(rules, line)
	}
	m := models(t)
	for _, name := range m.Names() {
		for _, u := range m[name].USB {
			found := false
			for _, r := range rules {
				if !strings.Contains(r, `GROUP="gated"`) || !strings.Contains(r, `{idVendor}=="`+u.VID.String()+`"`) {
					continue
				}
				if pm := regexp.MustCompile(`\{idProduct\}=="([^"]*)"`).FindStringSubmatch(r); pm != nil {
					for _, p := range strings.Split(pm[1], "|") {
						found = found || p == u.PID.String()
					}
				}
			}
			if !found {
				t.Errorf("model %s: no udev rule gives gated %s:%s (%s mode)", name, u.VID, u.PID, u.Mode)
			}
		}
	}
}
