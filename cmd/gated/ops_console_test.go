package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gated-dev/gated/internal/testreq"
)

// tmuxSession runs a command in a detached tmux of cols x rows on a
// private server socket, so the test sees exactly what a terminal shows.
type tmuxSession struct {
	t    *testing.T
	sock string
}

func newTmux(t *testing.T, cols, rows int, command string) *tmuxSession {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		testreq.Skipf(t, "tmux not installed (apt-get install tmux)")
	}
	s := &tmuxSession{t: t, sock: fmt.Sprintf("gated-test-%d-%d", os.Getpid(), time.Now().UnixNano())}
	s.run("new-session", "-d", "-s", "gate", "-x", strconv.Itoa(cols), "-y", strconv.Itoa(rows), command)
	t.Cleanup(func() { exec.Command("tmux", "-L", s.sock, "kill-server").Run() })
	return s
}

func (s *tmuxSession) run(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", s.sock}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// screen is the pane's text; styled adds the SGR escapes.
func (s *tmuxSession) screen(styled bool) string {
	args := []string{"capture-pane", "-p", "-t", "gate"}
	if styled {
		args = append(args, "-e")
	}
	return s.run(args...)
}

// waitFor polls the screen until it shows every string in want.
func (s *tmuxSession) waitFor(want ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var scr string
	for time.Now().Before(deadline) {
		scr = s.screen(false)
		if containsAll(scr, want...) {
			return scr
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("screen never showed %q:\n%s", want, scr)
	return ""
}

// type sends a line as a keyboard-wedge scanner would.
func (s *tmuxSession) typeLine(text string) {
	s.run("send-keys", "-t", "gate", "-l", text)
	s.run("send-keys", "-t", "gate", "Enter")
}

// The staff console in a real terminal: gated started on a TTY draws the
// full screen; a keyboard-wedge scan shows a green ADMIT, the same ticket
// again a red DENY with the reason in words, and the counts follow.
func TestConsoleInTmux(t *testing.T) {
	s := newSite(t)
	codes := s.issue("--event", "expo", "--count", "1", "--zone", "GA")
	s.provision("expo")
	cmd := fmt.Sprintf("exec %s run --data %s --gate north-1 --console-hold 1h", bin("gated"), s.gate)
	tm := newTmux(t, 120, 40, cmd)
	tm.run("set-option", "-t", "gate", "remain-on-exit", "on") // to read what is left after exit

	idle := tm.waitFor("gate north-1", "event expo", "STANDALONE", "scan the next ticket", "Admitted 0", "Scanners: ● stdin up")
	if !strings.Contains(idle, "██") {
		t.Errorf("no large letters on the idle screen:\n%s", idle)
	}

	tm.typeLine(codes[0])
	scr := tm.waitFor("ADMIT: valid ticket", "zone GA", "Admitted 1", "Denied 0")
	if strings.Contains(scr, codes[0][:20]) {
		t.Errorf("the scanned code was echoed onto the screen:\n%s", scr)
	}
	// Green background (SGR 42): tmux writes each attribute as its own
	// escape, once where it starts, so look for it on the whole screen.
	if styled := tm.screen(true); !strings.Contains(styled, "\x1b[42m") || strings.Contains(styled, "\x1b[41m") {
		t.Errorf("ADMIT screen not on green:\n%q", styled)
	}

	tm.typeLine(codes[0])
	tm.waitFor("DENY: already used", "first used", "at gate north-1", "Admitted 1", "Denied 1")
	if styled := tm.screen(true); !strings.Contains(styled, "\x1b[41m") || strings.Contains(styled, "\x1b[42m") {
		t.Errorf("DENY screen not on red:\n%q", styled)
	}
	tm.typeLine("hello gate")
	tm.waitFor("DENY: not a ticket code", "Denied 2")

	// SIGTERM: gated gives the terminal back and exits; every decision
	// shown is in the journal.
	pid, _ := strconv.Atoi(strings.TrimSpace(tm.run("display-message", "-p", "-t", "gate", "#{pane_pid}")))
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for strings.TrimSpace(tm.run("display-message", "-p", "-t", "gate", "#{pane_dead}")) != "1" {
		if time.Now().After(deadline) {
			t.Fatal("gated still running 30s after SIGTERM")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The terminal is given back: the normal screen (and its scrollback,
	// joined where lines wrapped) with the totals on it.
	end := tm.run("capture-pane", "-p", "-J", "-S", "-", "-t", "gate")
	if !strings.Contains(end, "gated stopped: 1 admitted, 2 denied") || strings.Contains(end, "██") {
		t.Errorf("after exit the terminal shows:\n%s", end)
	}
	if n := len(nonEmptyLines(must(t, runBin(t, nil, "gated", "journal", "--data", s.gate)))); n != 3 {
		t.Fatalf("journal holds %d decisions, want 3", n)
	}
}

// Not a terminal: the one-line-per-decision output scripts read.
func TestConsoleLinesWhenNotATTY(t *testing.T) {
	s := newSite(t)
	codes := s.issue("--event", "expo", "--count", "1")
	s.provision("expo")
	r := runBin(t, strings.NewReader(codes[0]+"\n"+codes[0]+"\n"), "gated", "run", "--data", s.gate, "--gate", "north-1")
	lines := nonEmptyLines(must(t, r))
	if len(lines) != 2 || !strings.Contains(lines[0], "ADMIT valid ticket") || !strings.Contains(lines[1], "DENY  already used") {
		t.Fatalf("output %q", lines)
	}
	if strings.Contains(r.stdout, "\x1b[") {
		t.Fatalf("escape sequences in non-TTY output: %q", r.stdout)
	}
}
