package main

// Helpers for the operations tests (ops_*_test.go): a gated run kept
// alive with its stdin open, read line by line as it decides.

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// liveGated is a running `gated run` whose stdin stays open.
type liveGated struct {
	t     *testing.T
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout, a line at a time
	errMu sync.Mutex
	errb  bytes.Buffer
	done  chan error
}

// startGated starts gated run on s's gate with args after the data and
// gate flags; env is added to the environment.
func startLive(t *testing.T, s *site, env []string, args ...string) *liveGated {
	t.Helper()
	full := append([]string{"run", "--data", s.gate, "--gate", "north-1"}, args...)
	g := &liveGated{t: t, cmd: exec.Command(bin("gated"), full...), lines: make(chan string, 1000), done: make(chan error, 1)}
	g.cmd.Env = append(os.Environ(), env...)
	g.cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		g.errMu.Lock()
		defer g.errMu.Unlock()
		return g.errb.Write(p)
	})
	var err error
	if g.stdin, err = g.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := g.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			g.lines <- sc.Text()
		}
		close(g.lines)
		g.done <- g.cmd.Wait()
	}()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("gated stderr:\n%s", g.stderr())
		}
	})
	return g
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (g *liveGated) stderr() string {
	g.errMu.Lock()
	defer g.errMu.Unlock()
	return g.errb.String()
}

// scan sends codes and returns the decision line printed for each.
func (g *liveGated) scan(codes ...string) []string {
	g.t.Helper()
	for _, c := range codes {
		if _, err := io.WriteString(g.stdin, c+"\n"); err != nil {
			g.t.Fatalf("write scan: %v", err)
		}
	}
	var out []string
	for range codes {
		select {
		case l, ok := <-g.lines:
			if !ok {
				g.t.Fatalf("gated exited before deciding every scan")
			}
			out = append(out, l)
		case <-time.After(30 * time.Second):
			g.t.Fatalf("no decision after 30s; got %q", out)
		}
	}
	return out
}

// waitStderr waits for a line of stderr matching re and returns its
// first submatch (or the whole match).
func (g *liveGated) waitStderr(re *regexp.Regexp) string {
	g.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(g.stderr()); m != nil {
			return m[len(m)-1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.t.Fatalf("stderr never matched %s:\n%s", re, g.stderr())
	return ""
}

// stop sends SIGTERM and waits for a clean exit.
func (g *liveGated) stop() {
	g.t.Helper()
	g.cmd.Process.Signal(syscall.SIGTERM)
	for range g.lines {
	}
	select {
	case err := <-g.done:
		if err != nil {
			g.t.Fatalf("after SIGTERM: %v\n%s", err, g.stderr())
		}
	case <-time.After(30 * time.Second):
		g.t.Fatal("gated did not exit 30s after SIGTERM")
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

func sleepBriefly() { time.Sleep(50 * time.Millisecond) }
