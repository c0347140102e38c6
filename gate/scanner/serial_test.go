package scanner_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/scanner"
	"go.bug.st/serial"
)

// fakePort replays reads; an empty read is go.bug.st/serial's timeout,
// (0, nil). After its script it times out forever, or fails with err.
type fakePort struct {
	mu      sync.Mutex
	reads   [][]byte
	err     error
	failNow chan struct{} // err comes only once this is closed
	written bytes.Buffer
}

func (p *fakePort) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reads) == 0 {
		select {
		case <-p.failNow:
			return 0, p.err
		default:
		}
		time.Sleep(time.Millisecond)
		return 0, nil
	}
	r := p.reads[0]
	p.reads = p.reads[1:]
	return copy(b, r), nil
}

func (p *fakePort) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.written.Write(b)
}

func (p *fakePort) Close() error                       { return nil }
func (p *fakePort) SetReadTimeout(time.Duration) error { return nil }

func (p *fakePort) got() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.written.String()
}

// TestSerialReopens: a port that is missing, then times out (0, nil),
// reads, and fails, then comes back: the source reads through all of it.
func TestSerialReopens(t *testing.T) {
	first := &fakePort{reads: [][]byte{nil, nil, []byte("]Q1A"), nil, []byte("\r")}, err: syscall.EIO, failNow: make(chan struct{})}
	second := &fakePort{reads: [][]byte{[]byte("]Q1B\r")}, failNow: make(chan struct{})}
	var mu sync.Mutex
	opens := 0
	var modes []serial.Mode
	open := func(path string, m *serial.Mode) (scanner.Port, error) {
		mu.Lock()
		defer mu.Unlock()
		opens++
		modes = append(modes, *m)
		switch opens {
		case 1:
			return nil, fs.ErrNotExist
		case 2:
			return first, nil
		}
		return second, nil
	}
	var slept []time.Duration
	env := scanner.Env{Models: models(t), OpenPort: open, Backoff: scanner.Backoff{Min: time.Second, Max: 4 * time.Second,
		Sleep: func(ctx context.Context, d time.Duration) error { slept = append(slept, d); return ctx.Err() }}}
	src, err := scanner.Open("serial:/dev/x?model=honeywell-xenon-1950g&baud=9600&parity=even", env)
	if err != nil {
		t.Fatal(err)
	}
	fb := src.(scanner.Feedback)
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan scanner.Scan)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	a := <-out
	if err := fb.Signal(ctx, a, true); err != nil {
		t.Fatal(err)
	}
	close(first.failNow) // now the device goes away
	b := <-out
	if err := fb.Signal(ctx, b, false); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if string(a.Data) != "A" || a.Symbology != "]Q1" || string(b.Data) != "B" {
		t.Errorf("scans %q %q", a.Data, b.Data)
	}
	if first.got() != "\x1b1\x1ba" || second.got() != "\x1b7\x1ba" {
		t.Errorf("feedback %q then %q", first.got(), second.got())
	}
	if opens != 3 || modes[0].BaudRate != 9600 || modes[0].Parity != serial.EvenParity {
		t.Errorf("opens %d, modes %+v", opens, modes)
	}
	// Missing: back off once; after the failure: reopen at the first delay.
	if len(slept) < 1 || slept[0] != time.Second {
		t.Errorf("backoff %v", slept)
	}
	if !errors.Is(fb.Signal(context.Background(), b, true), scanner.ErrDisconnected) {
		t.Error("feedback after Run ended did not report the device as disconnected")
	}
}
