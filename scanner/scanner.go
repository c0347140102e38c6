// Package scanner turns devices into scans: the raw bytes a scanner read,
// which source read them, and when.
//
// A Source runs until its context ends or its input ends. Sources that can
// answer the scanner (beep, LED) also implement Feedback.
package scanner

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Scan is one read of one code.
type Scan struct {
	Data      []byte    // the code's content, framing removed
	Symbology string    // AIM identifier such as "]Q1" when the device reports one
	Source    string    // the source's name, e.g. "stdin"
	At        time.Time // when the read arrived
	Truncated bool      // the read was longer than the source's limit; Data holds its start
}

// Source yields scans. Run sends each scan on out and returns when ctx is
// done (nil error) or when its input ends or fails.
type Source interface {
	Name() string
	Run(ctx context.Context, out chan<- Scan) error
}

// Feedback is the optional capability of a source that can tell the scanner
// how a scan was decided (good-read beep, red LED).
type Feedback interface {
	Signal(ctx context.Context, s Scan, admit bool) error
}

// Env is what sources need from the process: injected so tests can hand in
// pipes, fake devices and a fixed clock.
type Env struct {
	Stdin interface{ Read([]byte) (int, error) }
	Now   func() time.Time
}

// Open makes a source from a URI such as "stdin:".
func Open(uri string, env Env) (Source, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("scanner %q: want a URI such as stdin:", uri)
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	switch strings.ToLower(u.Scheme) {
	case "stdin":
		if env.Stdin == nil {
			return nil, fmt.Errorf("scanner %q: no standard input", uri)
		}
		return NewLines("stdin", env.Stdin, env.Now), nil
	}
	return nil, fmt.Errorf("scanner %q: unknown kind %q (known: stdin:)", uri, u.Scheme)
}
