package sdnotify

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// listen makes a real notify socket, as systemd does, and points
// NOTIFY_SOCKET at it.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

func next(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestStates(t *testing.T) {
	c := listen(t)
	n := New(nil)
	for _, tc := range []struct {
		name string
		call func()
		want []string
	}{
		{"ready", func() { n.Ready("admitting") }, []string{"READY=1", "STATUS=admitting"}},
		{"reloading", n.Reloading, []string{"RELOADING=1", "MONOTONIC_USEC="}},
		{"status", func() { n.Status("3 admitted") }, []string{"STATUS=3 admitted"}},
		{"stopping", n.Stopping, []string{"STOPPING=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.call()
			got := next(t, c)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("sent %q, want it to contain %q", got, w)
				}
			}
		})
	}
}

func TestNoSocketIsSilent(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n := New(nil)
	n.Ready("x") // must not panic or block
	if d := n.WatchdogInterval(); d != 0 {
		t.Fatalf("watchdog interval %v without WATCHDOG_USEC", d)
	}
	done := make(chan struct{})
	go func() { n.Watchdog(context.Background(), nil); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Watchdog did not return with the watchdog off")
	}
}

func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	c := listen(t)
	t.Setenv("WATCHDOG_USEC", "40000") // ping every 20ms
	n := New(nil)
	if d := n.WatchdogInterval(); d != 20*time.Millisecond {
		t.Fatalf("interval %v, want half of WATCHDOG_USEC", d)
	}
	var sick atomic.Bool
	var checks atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		n.Watchdog(ctx, func(context.Context) error {
			checks.Add(1)
			if sick.Load() {
				return errors.New("store does not answer")
			}
			return nil
		})
		close(done)
	}()
	for range 3 {
		if got := next(t, c); got != "WATCHDOG=1" {
			t.Fatalf("sent %q, want WATCHDOG=1", got)
		}
	}
	sick.Store(true)
	// Drain pings sent before the flag was seen, then expect silence for
	// several health checks.
	c.SetReadDeadline(time.Now().Add(time.Second))
	seen := checks.Load()
	for checks.Load() < seen+5 {
		buf := make([]byte, 64)
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		c.Read(buf)
	}
	buf := make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("pinged %q while the health check fails", buf[:n])
	}
	sick.Store(false)
	if got := next(t, c); got != "WATCHDOG=1" {
		t.Fatalf("sent %q after recovery, want WATCHDOG=1", got)
	}
	cancel()
	<-done
}

func TestServe(t *testing.T) {
	c := listen(t)
	t.Setenv("WATCHDOG_USEC", "40000")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { New(nil).Serve(ctx, "serving", nil); close(done) }()
	if got := next(t, c); got != "READY=1\nSTATUS=serving" {
		t.Fatalf("first %q", got)
	}
	if got := next(t, c); got != "WATCHDOG=1" {
		t.Fatalf("then %q", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return when ctx ended")
	}
}
