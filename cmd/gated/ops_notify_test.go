package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gated under a notify socket, as systemd starts a Type=notify unit with
// WatchdogSec: it reports READY=1 once it decides, pings WATCHDOG=1 while
// healthy, and STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	s := newSite(t)
	codes := s.issue("--event", "expo", "--count", "1")
	s.provision("expo")
	sock, expect := notifySocket(t)
	// WATCHDOG_USEC of 200ms: a ping every 100ms.
	g := startLive(t, s, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"}, "--output", "json")
	ready := expect("READY=1")
	if !strings.Contains(ready, "STATUS=") {
		t.Errorf("READY without a STATUS line: %q", ready)
	}
	for range 3 {
		expect("WATCHDOG=1")
	}
	if d := g.scan(codes[0]); !strings.Contains(d[0], `"verdict":"admit"`) {
		t.Fatalf("decision %q", d[0])
	}
	expect("WATCHDOG=1") // still pinging after scans
	g.stop()
	expect("STOPPING=1")
}

// notifySocket listens where systemd would and returns the socket's path
// and a function that waits for a message containing want.
func notifySocket(t *testing.T) (string, func(want string) string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msgs := make(chan string, 1000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return sock, func(want string) string {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, want) {
					return m
				}
			case <-timeout:
				t.Fatalf("no %s on the notify socket", want)
			}
		}
	}
}

// gatesync serve speaks the same protocol for gatesync.service.
func TestGatesyncSystemdNotify(t *testing.T) {
	s := newSite(t)
	sock, expect := notifySocket(t)
	cmd := exec.Command(bin("gatesync"), "serve", "--dir", s.centre, "--mqtt-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=200000")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	if m := expect("READY=1"); !strings.Contains(m, "STATUS=serving") {
		t.Errorf("READY without status: %q", m)
	}
	expect("WATCHDOG=1")
	expect("WATCHDOG=1")
	cmd.Process.Signal(syscall.SIGTERM)
	expect("STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("gatesync after SIGTERM: %v\n%s", err, stderr.String())
	}
}
