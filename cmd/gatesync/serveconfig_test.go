package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve --config reads its settings from YAML, flags given override them,
// and an unknown key is a usage error (exit 2) that names it. checkScaleOut
// refuses an unknown --store before anything opens, which shows the value
// serve was given.
func TestServeConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "gatesync.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("dir: " + dir + "\nstore: mysql://from-file\nmqtt_listen: 127.0.0.1:0\nallow_anonymous: true\n")
	code, _, stderr := gatesync(t, time.Now, "serve", "--config", cfg)
	if code != 2 || !strings.Contains(stderr, `"mysql://from-file"`) {
		t.Errorf("from the file: exit %d, %s", code, stderr)
	}
	code, _, stderr = gatesync(t, time.Now, "serve", "--config", cfg, "--store", "mysql://from-flag")
	if code != 2 || !strings.Contains(stderr, `"mysql://from-flag"`) {
		t.Errorf("flag over the file: exit %d, %s", code, stderr)
	}
	write("dir: " + dir + "\nmqtt_lisen: 127.0.0.1:0\n")
	code, _, stderr = gatesync(t, time.Now, "serve", "--config", cfg)
	if code != 2 || !strings.Contains(stderr, `unknown key "mqtt_lisen"`) {
		t.Errorf("bad key: exit %d, %s", code, stderr)
	}
	write("dir: " + dir + "\nallow_anonymous: perhaps\n")
	code, _, stderr = gatesync(t, time.Now, "serve", "--config", cfg)
	if code != 2 || !strings.Contains(stderr, "allow_anonymous") {
		t.Errorf("bad value: exit %d, %s", code, stderr)
	}
}

// The example in deploy/ names only keys serve knows.
func TestServeConfigExample(t *testing.T) {
	code, _, stderr := gatesync(t, time.Now, "serve", "--config", "../../deploy/gatesync.yaml", "--store", "mysql://x")
	if code != 2 || !strings.Contains(stderr, `--store "mysql://x"`) {
		t.Errorf("exit %d, %s", code, stderr)
	}
}
