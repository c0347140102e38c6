package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// gated doctor on real gate directories: each problem is named with what
// to do, and the exit code tells scripts whether anything failed.
func TestDoctor(t *testing.T) {
	s := newSite(t)
	s.issue("--event", "expo", "--count", "1")
	s.provision("expo")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	sysfs := t.TempDir()
	dev := filepath.Join(sysfs, "bus", "usb", "devices", "1-1")
	os.MkdirAll(dev, 0o755)
	os.WriteFile(filepath.Join(dev, "idVendor"), []byte("0c2e\n"), 0o644)
	os.WriteFile(filepath.Join(dev, "idProduct"), []byte("0b67\n"), 0o644)

	base := []string{"doctor", "--data", s.gate, "--gate", "north-1", "--sysfs", sysfs}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"healthy standalone", nil, 0, []string{"ok    config", "ok    store        event expo", "ok    trust list",
			"ok    clock", "ok    scanner      stdin:", "ok    broker       none configured", "all checks passed"}},
		{"broker reachable", []string{"--broker", "tcp://" + ln.Addr().String(), "--venue", "v"}, 0,
			[]string{"accepts connections"}},
		{"broker unreachable", []string{"--broker", "tcp://" + closedAddr, "--venue", "v"}, 1,
			[]string{"FAIL  broker", "cannot reach", "→ check the network", "1 check(s) failed"}},
		{"serial scanner missing", []string{"--scanner", "serial:/dev/ttyGATEDTEST9?model=honeywell-voyager-1470g"}, 1,
			[]string{"FAIL  scanner", "/dev/ttyGATEDTEST9 is not there", "→ plug the scanner in"}},
		{"hid scanner present", []string{"--scanner", "hid:0c2e:0b67?model=honeywell-voyager-1470g"}, 0,
			[]string{"ok    scanner      hid:0c2e:0b67", "USB device present"}},
		{"hid scanner absent", []string{"--scanner", "hid:05e0:1200?model=honeywell-voyager-1470g"}, 1,
			[]string{"FAIL  scanner", "no USB device 05e0:1200", "→ plug the scanner in"}},
		{"bad scanner URI", []string{"--scanner", "floppy:/dev/fd0"}, 1, []string{"FAIL  scanner", "unknown kind"}},
		{"bad config", []string{"--output", "hologram"}, 1, []string{"FAIL  config", `output "hologram"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runBin(t, nil, "gated", append(base, tc.args...)...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d\n%s%s", r.code, tc.code, r.stdout, r.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout+r.stderr, w) {
					t.Errorf("report lacks %q:\n%s%s", w, r.stdout, r.stderr)
				}
			}
		})
	}

	t.Run("not provisioned", func(t *testing.T) {
		r := runBin(t, nil, "gated", "doctor", "--data", t.TempDir(), "--gate", "g")
		if r.code != 1 || !strings.Contains(r.stdout, "FAIL  store") || !strings.Contains(r.stdout, "gated provision --data") {
			t.Errorf("exit %d:\n%s", r.code, r.stdout)
		}
	})
	t.Run("usage", func(t *testing.T) {
		r := runBin(t, nil, "gated", "doctor", "--bogus")
		if r.code != 2 {
			t.Errorf("exit %d for an unknown flag, want 2:\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("gated running", func(t *testing.T) {
		g := startLive(t, s, nil, "--output", "json", "--http", "127.0.0.1:0")
		addr := g.waitStderr(httpAddrRE)
		r := runBin(t, nil, "gated", append(base, "--http", addr)...)
		if r.code != 0 || !strings.Contains(r.stdout, "open in a running gated") || !strings.Contains(r.stdout, "is ready") {
			t.Errorf("exit %d:\n%s", r.code, r.stdout)
		}
		g.stop()
	})
}
