package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/gated-dev/gated/internal/testreq"
)

var units = []struct{ file, binary string }{
	{"gated.service", "gated"},
	{"gatesync.service", "gatesync"},
}

// unitCopy writes a copy of a unit from systemd/ with ExecStart pointing
// at the binary this test run built, since verify checks that the
// command exists and is executable.
func unitCopy(t *testing.T, dir, file, binary string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "systemd", file))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), "/usr/bin/"+binary+" ", bin(binary)+" ")
	if !strings.Contains(text, "ExecStart="+bin(binary)) {
		t.Fatalf("%s: ExecStart does not run /usr/bin/%s", file, binary)
	}
	p := filepath.Join(dir, file)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// systemd-analyze verify exits 0 on unknown keys and bad values, printing
// a warning; so any output at all fails the test.
func TestUnitsVerify(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		testreq.Skipf(t, "systemd-analyze not installed (apt-get install systemd)")
	}
	dir := t.TempDir()
	var paths []string
	for _, u := range units {
		paths = append(paths, unitCopy(t, dir, u.file, u.binary))
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, paths...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// The check itself catches mistakes: a misspelt key must fail it.
	bad := filepath.Join(dir, "bad.service")
	b, _ := os.ReadFile(paths[0])
	os.WriteFile(bad, []byte(strings.Replace(string(b), "ProtectSystem=", "ProtectSystm=", 1)), 0o644)
	out, _ = exec.Command("systemd-analyze", "verify", "--man=no", bad).CombinedOutput()
	if !strings.Contains(string(out), "ProtectSystm") {
		t.Fatalf("verify did not report a misspelt key: %s", out)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// The hardening must not regress: systemd-analyze security rates both
// units "OK" (below 2.0 of 10). Offline mode rates the unit file itself.
func TestUnitsExposure(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		testreq.Skipf(t, "systemd-analyze not installed (apt-get install systemd)")
	}
	dir := t.TempDir()
	for _, u := range units {
		p := unitCopy(t, dir, u.file, u.binary)
		out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", p).CombinedOutput()
		m := exposureRE.FindSubmatch(out)
		if m == nil {
			if err != nil && strings.Contains(string(out), "offline") {
				testreq.Skipf(t, "this systemd-analyze cannot rate unit files offline: %s", out)
			}
			t.Fatalf("%s: no exposure level in: %v\n%s", u.file, err, out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s exposure %.1f", u.file, score)
		if score >= 2.0 {
			t.Errorf("%s exposure %.1f, want below 2.0 (systemd-analyze security --offline=true %s)", u.file, score, p)
		}
	}
}
