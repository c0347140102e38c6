package main

import (
	"net"
	"path/filepath"
	"strings"
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
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 100)
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
	// WATCHDOG_USEC of 200ms: a ping every 100ms.
	g := startLive(t, s, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"}, "--output", "json")
	expect := func(want string) string {
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
