package main

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGHUP re-reads the config file: zones change at once, a scanner added
// to the list starts reading, the stdin scanner keeps its place (a scan
// sent right before the signal is decided), and a broken config is refused
// with the old one kept. systemd hears RELOADING=1 then READY=1.
func TestSIGHUPReload(t *testing.T) {
	s := newSite(t)
	ga := s.issue("--event", "expo", "--count", "1", "--zone", "GA")
	vip := s.issue("--event", "expo", "--count", "3", "--zone", "VIP")
	pngs := filepath.Join(t.TempDir(), "png")
	s.issue("--event", "expo", "--count", "1", "--zone", "VIP", "--png", pngs)
	s.provision("expo")

	dir := t.TempDir()
	cfg := filepath.Join(dir, "gated.yaml")
	write := func(text string) {
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("output: json\nzones: [GA]\nscanners: [\"stdin:\"]\n")

	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	next := func() string {
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("notify socket: %v", err)
		}
		return string(buf[:n])
	}

	g := startLive(t, s, []string{"NOTIFY_SOCKET=" + sock}, "--config", cfg)
	if m := next(); !strings.Contains(m, "READY=1") {
		t.Fatalf("first notification %q", m)
	}
	if d := g.scan(vip[0]); !strings.Contains(d[0], `"reason":"wrong_zone"`) {
		t.Fatalf("VIP at a GA gate: %s", d[0])
	}

	watched := filepath.Join(dir, "camera")
	os.MkdirAll(watched, 0o755)
	write("output: json\nzones: [VIP]\nscanners: [\"stdin:\", \"dir:" + watched + "?poll=50ms\"]\n")
	g.stdin.Write([]byte(vip[1] + "\n")) // in flight as the signal lands
	g.cmd.Process.Signal(syscall.SIGHUP)
	var inFlight string
	select {
	case inFlight = <-g.lines:
	case <-time.After(30 * time.Second):
		t.Fatal("the scan sent before SIGHUP was never decided")
	}
	// Decided under the old zones or the new, depending on which came
	// first; decided either way.
	if !strings.Contains(inFlight, `"verdict"`) {
		t.Fatalf("in-flight scan: %s", inFlight)
	}
	if m := next(); !strings.Contains(m, "RELOADING=1") {
		t.Fatalf("notification %q, want RELOADING=1", m)
	}
	if m := next(); !strings.Contains(m, "READY=1") {
		t.Fatalf("notification %q, want READY=1 after reload", m)
	}
	g.waitStderr(regexp.MustCompile(`msg="configuration reloaded"`))

	d := g.scan(vip[2], ga[0])
	if !strings.Contains(d[0], `"verdict":"admit"`) || !strings.Contains(d[1], `"reason":"wrong_zone"`) {
		t.Fatalf("after reload to VIP: %q", d)
	}

	// The new dir: scanner reads a ticket image put in its directory.
	entries, _ := os.ReadDir(pngs)
	if len(entries) != 1 {
		t.Fatalf("%d PNGs", len(entries))
	}
	os.Rename(filepath.Join(pngs, entries[0].Name()), filepath.Join(watched, entries[0].Name()))
	select {
	case l := <-g.lines:
		if !strings.Contains(l, `"verdict":"admit"`) || !strings.Contains(l, `"scanner":"dir:`) {
			t.Fatalf("camera scan: %s", l)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the scanner added by reload read nothing\n%s", g.stderr())
	}

	// A broken config changes nothing.
	write("output: json\nzones: [GA]\nscanners: [\"stdin:\"]\nstrictt: true\n")
	g.cmd.Process.Signal(syscall.SIGHUP)
	g.waitStderr(regexp.MustCompile(`msg="reload refused; still running the previous configuration".*strictt`))
	if d := g.scan(vip[2]); !strings.Contains(d[0], `"reason":"already_used"`) {
		t.Fatalf("after a refused reload the VIP zone should still hold: %s", d[0])
	}
	g.stop()
}
