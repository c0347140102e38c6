package scanner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"go.bug.st/serial"
)

// Port is what a serial source needs of an open port; go.bug.st/serial's
// Port satisfies it, and tests hand in pipes or ptys.
type Port interface {
	io.ReadWriteCloser
	// SetReadTimeout bounds Read; on timeout Read returns (0, nil).
	SetReadTimeout(d time.Duration) error
}

// OpenPortFunc opens a serial device.
type OpenPortFunc func(path string, mode *serial.Mode) (Port, error)

// OpenSerialPort opens a real serial port with go.bug.st/serial.
func OpenSerialPort(path string, mode *serial.Mode) (Port, error) {
	p, err := serial.Open(path, mode)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// pollInterval bounds how long a blocked read keeps a stopping source
// waiting.
const pollInterval = 200 * time.Millisecond

// Serial reads a scanner on a serial port (RS-232 or USB CDC-ACM) with the
// model's framing, answers its protocol (ACK/NAK), sends it good/bad-read
// feedback, and reopens it when it goes away.
type Serial struct {
	name, path string
	model      *Model
	mode       serial.Mode
	proto      protocol
	open       OpenPortFunc
	now        func() time.Time
	log        *slog.Logger
	backoff    Backoff

	mu   sync.Mutex
	port Port // nil while disconnected
}

// Backoff is how long a source waits between attempts to reopen a device:
// Min first, doubling to Max. Zero values mean 100ms and 5s.
type Backoff struct {
	Min, Max time.Duration
	// Sleep waits d or until ctx ends; nil means a timer. Tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
}

func (b Backoff) withDefaults() Backoff {
	if b.Min <= 0 {
		b.Min = 100 * time.Millisecond
	}
	if b.Max < b.Min {
		b.Max = 5 * time.Second
	}
	if b.Sleep == nil {
		b.Sleep = sleepCtx
	}
	return b
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewSerial returns a serial source for the device at path driven as md.
// The settings in mode override the model's serial settings where set.
func NewSerial(path string, md *Model, env Env) *Serial {
	s := &Serial{name: "serial:" + path, path: path, model: md, proto: newProtocol(md),
		open: env.OpenPort, now: env.Now, log: env.Log, backoff: env.Backoff.withDefaults()}
	if s.open == nil {
		s.open = OpenSerialPort
	}
	s.mode = serial.Mode{BaudRate: md.Serial.Baud, DataBits: md.Serial.DataBits,
		Parity: parityOf[md.Serial.Parity], StopBits: serial.OneStopBit}
	if md.Serial.StopBits == 2 {
		s.mode.StopBits = serial.TwoStopBits
	}
	s.log = s.log.With("scanner", s.name, "model", md.Name)
	return s
}

var parityOf = map[string]serial.Parity{"none": serial.NoParity, "odd": serial.OddParity,
	"even": serial.EvenParity, "mark": serial.MarkParity, "space": serial.SpaceParity}

// Name implements Source.
func (s *Serial) Name() string { return s.name }

// Run implements Source. It returns only when ctx is done: a device that
// fails or disappears is reopened with backoff.
func (s *Serial) Run(ctx context.Context, out chan<- Scan) error {
	delay := s.backoff.Min
	failing := false
	for ctx.Err() == nil {
		port, err := s.open(s.path, &s.mode)
		if err != nil {
			if !failing {
				s.log.Warn("scanner not available; retrying", "err", serialHint(s.path, err))
				failing = true
			} else {
				s.log.Debug("scanner still not available", "err", err)
			}
			if s.backoff.Sleep(ctx, delay) != nil {
				break
			}
			delay = min(delay*2, s.backoff.Max)
			continue
		}
		failing, delay = false, s.backoff.Min
		s.log.Info("scanner connected", "baud", s.mode.BaudRate)
		s.proto.reset()
		s.mu.Lock()
		s.port = port
		s.mu.Unlock()
		err = s.read(ctx, port, out)
		s.mu.Lock()
		s.port = nil
		s.mu.Unlock()
		port.Close()
		if ctx.Err() != nil {
			break
		}
		s.log.Warn("scanner disconnected; reopening", "err", err)
	}
	return nil
}

func (s *Serial) read(ctx context.Context, port Port, out chan<- Scan) error {
	if err := port.SetReadTimeout(pollInterval); err != nil {
		return fmt.Errorf("set read timeout: %w", err)
	}
	buf := make([]byte, 512)
	for ctx.Err() == nil {
		n, err := port.Read(buf)
		if err != nil {
			return err
		}
		if n == 0 {
			continue // go.bug.st/serial's timeout: (0, nil)
		}
		now := s.now()
		frames, reply := s.proto.feed(buf[:n], now)
		if d := s.proto.dropped(); d > 0 {
			s.log.Warn("scanner sent bytes that are not a read; dropped", "bytes", d)
		}
		if len(reply) > 0 {
			if err := s.write(reply); err != nil {
				return err
			}
		}
		for _, f := range frames {
			sc := Scan{Data: f.data, Symbology: f.symbology, Source: s.name, At: now, Truncated: f.truncated}
			select {
			case out <- sc:
			case <-ctx.Done():
				return nil
			}
		}
	}
	return nil
}

func (s *Serial) write(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.port == nil {
		return ErrDisconnected
	}
	if _, err := s.port.Write(b); err != nil {
		return fmt.Errorf("write to scanner: %w", err)
	}
	return nil
}

// ErrDisconnected is returned by Signal when the device is not connected,
// so the feedback for that read could not be given.
var ErrDisconnected = errors.New("scanner disconnected; feedback not sent")

// Signal implements Feedback: it sends the model's good- or bad-read
// commands. Models without feedback commands get nothing.
func (s *Serial) Signal(ctx context.Context, sc Scan, admit bool) error {
	b := s.proto.feedback(admit)
	if len(b) == 0 {
		return nil
	}
	return s.write(b)
}

// serialHint adds what a person should do to an open error.
func serialHint(path string, err error) error {
	var pe *serial.PortError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w (is the scanner plugged in and set to USB serial mode? `gated scanners` lists the ports present)", path, err)
	case errors.As(err, &pe) && pe.Code() == serial.PermissionDenied, errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: permission denied (install systemd/60-gated-scanners.rules or add the daemon's user to the dialout group)", path)
	case errors.As(err, &pe) && pe.Code() == serial.PortBusy:
		return fmt.Errorf("%s: busy; another program holds the port", path)
	}
	return fmt.Errorf("%s: %w", path, err)
}

// applySerialQuery overrides a model's serial settings from ?baud=...
func applySerialQuery(md *Model, q map[string][]string) error {
	for key, field := range map[string]*int{"baud": &md.Serial.Baud, "data_bits": &md.Serial.DataBits, "stop_bits": &md.Serial.StopBits} {
		if v, ok := q[key]; ok {
			n, err := strconv.Atoi(v[0])
			if err != nil {
				return fmt.Errorf("%s=%q: want a number", key, v[0])
			}
			*field = n
		}
	}
	if v, ok := q["parity"]; ok {
		md.Serial.Parity = v[0]
	}
	return nil
}
