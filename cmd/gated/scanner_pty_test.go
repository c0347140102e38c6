package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gated-dev/gated/internal/testreq"
)

// scannerTools builds gated and gatesync once per test binary run.
var scannerTools struct {
	once sync.Once
	dir  string
	err  error
}

// buildScannerTools returns the directory holding freshly built gated and
// gatesync binaries.
func buildScannerTools(t testing.TB) string {
	t.Helper()
	scannerTools.once.Do(func() {
		dir, err := os.MkdirTemp("", "gated-scanner-bin")
		if err != nil {
			scannerTools.err = err
			return
		}
		scannerTools.dir = dir
		out, err := exec.Command("go", "build", "-o", dir+"/", "github.com/gated-dev/gated/cmd/gated", "github.com/gated-dev/gated/cmd/gatesync").CombinedOutput()
		if err != nil {
			scannerTools.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if scannerTools.err != nil {
		t.Fatal(scannerTools.err)
	}
	return scannerTools.dir
}

// ticketGate is a provisioned gate data directory and the tickets issued for it.
type ticketGate struct {
	bin, data string
	tickets   []string
	pngDir    string
}

// newTicketGate issues n tickets with gatesync and provisions a gate with them.
func newTicketGate(t *testing.T, n int, png bool) *ticketGate {
	t.Helper()
	bin := buildScannerTools(t)
	dir := t.TempDir()
	tg := &ticketGate{bin: bin, data: filepath.Join(dir, "gate")}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(bin, name), args...).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("%s %v: %v\n%s", name, args, err, stderr)
		}
		return string(out)
	}
	centre := filepath.Join(dir, "centre")
	run("gatesync", "init", "--dir", centre)
	args := []string{"issue", "--dir", centre, "--event", "E1", "--count", fmt.Sprint(n)}
	if png {
		tg.pngDir = filepath.Join(dir, "png")
		args = append(args, "--png", tg.pngDir)
	}
	tg.tickets = strings.Split(strings.TrimRight(run("gatesync", args...), "\n"), "\n")
	bundle := filepath.Join(dir, "bundle.json")
	run("gatesync", "export", "--dir", centre, "--event", "E1", "--out", bundle)
	run("gated", "provision", "--data", tg.data, bundle)
	return tg
}

// daemon is a running `gated run` with its decisions and log lines.
type daemon struct {
	cmd       *exec.Cmd
	decisions chan map[string]any
	logs      chan string
	logMu     sync.Mutex
	logText   strings.Builder
}

func startGated(t *testing.T, tg *ticketGate, scanners ...string) *daemon {
	t.Helper()
	args := []string{"run", "--data", tg.data, "--gate", "G1", "--output", "json", "--log-level", "debug"}
	for _, s := range scanners {
		args = append(args, "--scanner", s)
	}
	d := &daemon{cmd: exec.Command(filepath.Join(tg.bin, "gated"), args...),
		decisions: make(chan map[string]any, 100), logs: make(chan string, 1000)}
	stdout, _ := d.cmd.StdoutPipe()
	stderr, _ := d.cmd.StderrPipe()
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"unparsed": sc.Text()}
			}
			d.decisions <- m
		}
	}()
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.logMu.Lock()
			d.logText.WriteString(sc.Text() + "\n")
			d.logMu.Unlock()
			select {
			case d.logs <- sc.Text():
			default:
			}
		}
	}()
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- d.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("gated did not stop cleanly: %v\n%s", err, d.log())
			}
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			t.Errorf("gated did not stop on SIGTERM\n%s", d.log())
		}
	})
	return d
}

func (d *daemon) log() string {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	return d.logText.String()
}

// waitLog waits for a log line containing s.
func (d *daemon) waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case l := <-d.logs:
			if strings.Contains(l, s) {
				return
			}
		case <-deadline:
			t.Fatalf("gated never logged %q; log:\n%s", s, d.log())
		}
	}
}

// decision waits for the next decision.
func (d *daemon) decision(t *testing.T) map[string]any {
	t.Helper()
	select {
	case m := <-d.decisions:
		return m
	case <-time.After(15 * time.Second):
		t.Fatalf("no decision from gated; log:\n%s", d.log())
		return nil
	}
}

// expect checks the next decision's verdict, reason (when given) and ticket
// payload index.
func (d *daemon) expect(t *testing.T, verdict, reason string) map[string]any {
	t.Helper()
	m := d.decision(t)
	if m["verdict"] != verdict || reason != "" && m["reason"] != reason {
		t.Fatalf("decision %v, want %s %s; log:\n%s", m, verdict, reason, d.log())
	}
	return m
}

// pty is one pseudo-terminal pair: the test holds the master side and plays
// the scanner; gated opens the slave through a symlink as it would
// /dev/ttyACM0.
type pty struct {
	master *os.File
	slave  string
	got    chan []byte
}

func openPTY(t *testing.T) *pty {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		testreq.Skipf(t, "no pseudo-terminals here: %v", err)
	}
	// Not m.Fd(): that would put the master in blocking mode, and Close
	// could then not end a pending Read, so the pty would never hang up.
	var n int
	rc, err := m.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ioErr error
	rc.Control(func(fd uintptr) {
		if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr == nil {
			n, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	})
	if ioErr != nil {
		t.Fatalf("unlock pty: %v", ioErr)
	}
	p := &pty{master: m, slave: fmt.Sprintf("/dev/pts/%d", n), got: make(chan []byte, 100)}
	// Raw, no echo, before gated opens it: bytes written meanwhile must
	// wait in the line as they would in a USB serial buffer.
	s, err := os.OpenFile(p.slave, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	if err := unix.IoctlSetTermios(int(s.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	s.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			if n > 0 {
				p.got <- bytes.Clone(buf[:n])
			}
			if err != nil {
				if errors.Is(err, syscall.EIO) { // no slave open at the moment
					time.Sleep(10 * time.Millisecond)
					continue
				}
				close(p.got)
				return
			}
		}
	}()
	t.Cleanup(func() { m.Close() })
	return p
}

func (p *pty) write(t *testing.T, b []byte) {
	t.Helper()
	if _, err := p.master.Write(b); err != nil {
		t.Fatalf("scanner write: %v", err)
	}
}

// expectBytes waits until the scanner side has received exactly want next.
func (p *pty) expectBytes(t *testing.T, what string, want []byte, pending *[]byte) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for len(*pending) < len(want) {
		select {
		case b, ok := <-p.got:
			if !ok {
				t.Fatalf("%s: pty closed; got % x", what, *pending)
			}
			*pending = append(*pending, b...)
		case <-deadline:
			t.Fatalf("%s: scanner received % x, want % x", what, *pending, want)
		}
	}
	if !bytes.Equal((*pending)[:len(want)], want) {
		t.Fatalf("%s: scanner received % x, want % x", what, *pending, want)
	}
	*pending = (*pending)[len(want):]
}

func unhex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// relink points link at target atomically, as udev does when a device
// comes back under its stable name.
func relink(t *testing.T, target, link string) {
	t.Helper()
	tmp := link + ".new"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}
