package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"runtime/pprof"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serve returns only after every goroutine it started has ended (the HTTP
// server, the dashboard, systemd notification) and its listeners are
// closed, so the deferred closes of the books never race them. (On
// SIGTERM they end before srv.Run returns in any case; the wait matters on
// the error paths, which this test does not reach.)
func TestServeWaitsForItsGoroutines(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := gatesync(t, time.Now, "init", "--dir", dir); code != 0 {
		t.Fatalf("init: %s", stderr)
	}
	api, mq := freePort(t), freePort(t)
	done := make(chan error, 1)
	go func() {
		done <- cmdServe([]string{"--dir", dir, "--listen", fmt.Sprintf("127.0.0.1:%d", api),
			"--mqtt-listen", fmt.Sprintf("127.0.0.1:%d", mq), "--log-level", "error"}, io.Discard, time.Now)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", api))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve never listened: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-done:
		t.Fatalf("serve returned before the signal: %v (is the port taken?)", err)
	default:
	}
	// The signal handler is installed before the listener opens.
	syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	var stacks bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&stacks, 1)
	for _, f := range []string{"dashboard.(*Dashboard).Run", "sdnotify.(*Notifier).Serve", "net/http.(*Server).Serve", "cmdServe"} {
		if strings.Contains(stacks.String(), f) {
			t.Errorf("%s still running after serve returned", f)
		}
	}
	for _, port := range []int{api, mq} {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			t.Errorf("port %d still open after serve returned", port)
		}
	}
}
