// Package scanner turns devices into scans: the raw bytes a scanner read,
// which source read them, and when.
//
// Sources are opened from URIs (see Open): standard input, serial ports
// (RS-232 or USB CDC-ACM) framed per scanner model, USB HID devices in HID
// POS or keyboard-wedge mode, V4L2 cameras, MJPEG streams and directories
// of images. Models live in firmware-configs/ (see LoadModels).
//
// A device source runs until its context ends, reopening its device when
// it disappears; stdin: ends at end of input. Sources that can answer the
// scanner (beep, LED) also implement Feedback.
package scanner

import (
	"context"
	"fmt"
	"image"
	"log/slog"
	"net/http"
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
// how a scan was decided (good-read beep, red LED). Signal may be called
// while Run is reading.
type Feedback interface {
	Signal(ctx context.Context, s Scan, admit bool) error
}

// Env is what sources need from the process: injected so tests can hand in
// pipes, fake devices and a fixed clock. The zero value of each field but
// Stdin means the real thing.
type Env struct {
	Stdin interface{ Read([]byte) (int, error) }
	Now   func() time.Time
	// Log receives device events (connected, gone, noise); nil discards.
	Log *slog.Logger
	// Models are the scanner models ?model= names; nil loads the built-in ones.
	Models Models
	// OpenPort opens serial ports; nil uses go.bug.st/serial.
	OpenPort OpenPortFunc
	// HID lists and opens USB HID devices; nil uses github.com/karalabe/usb
	// (unavailable when built with CGO_ENABLED=0).
	HID HIDBus
	// Backoff paces reopening a device that is gone.
	Backoff Backoff
	// HTTP fetches MJPEG streams; nil uses http.DefaultClient. It must not
	// set a Timeout, as a stream never ends.
	HTTP *http.Client
	// MaxFrame is the largest image a camera-like source (camera:, mjpeg:,
	// dir:) decodes; zero means DefaultMaxFrame. Larger frames are refused
	// from their header, before any pixel is allocated.
	MaxFrame image.Point
}

// Open makes a source from a URI:
//
//	stdin:                                 one scan a line
//	serial:/dev/ttyACM0?model=NAME[&baud=N&parity=even&data_bits=7&stop_bits=2]
//	        (any device URI: &models=DIR adds the model files in DIR)
//	hid:VID:PID?model=NAME[&mode=hid-pos|keyboard&layout=us|de&interface=N]
//	camera:/dev/video0[?leave=N]           V4L2 capture
//	mjpeg:http://HOST/PATH                 an IP camera's MJPEG stream
//	dir:/path[?leave=N&delete=true]        image files, in name order, as they appear
func Open(uri string, env Env) (Source, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("scanner %q: want a URI such as stdin:, serial:/dev/ttyACM0?model=NAME or dir:/path", uri)
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	where := u.Opaque
	if where == "" {
		where = u.Path
	}
	q := u.Query()
	src, err := open(strings.ToLower(u.Scheme), uri, where, q, env)
	if err != nil {
		return nil, fmt.Errorf("scanner %q: %w", uri, err)
	}
	return src, nil
}

func open(kind, uri, where string, q url.Values, env Env) (Source, error) {
	switch kind {
	case "stdin":
		if env.Stdin == nil {
			return nil, fmt.Errorf("no standard input")
		}
		return NewLines("stdin", env.Stdin, env.Now), nil
	case "serial":
		if where == "" {
			return nil, fmt.Errorf("no device path; use serial:/dev/ttyACM0?model=NAME")
		}
		md, err := pickModel(q, env)
		if err != nil {
			return nil, err
		}
		if err := applySerialQuery(md, q); err != nil {
			return nil, err
		}
		if err := md.check(); err != nil {
			return nil, err
		}
		return NewSerial(where, md, env), nil
	case "hid":
		md, err := pickModel(q, env)
		if err != nil {
			return nil, err
		}
		return newHIDFromQuery(where, md, q, env)
	case "camera", "mjpeg", "dir":
		return newCameraFromURI(kind, uri, where, q, env)
	}
	return nil, fmt.Errorf("unknown kind %q (known: stdin:, serial:, hid:, camera:, mjpeg:, dir:)", kind)
}

// pickModel returns a copy of the model ?model= names, which the query
// may then override.
func pickModel(q url.Values, env Env) (*Model, error) {
	name := q.Get("model")
	models := env.Models
	if dir := q.Get("models"); dir != "" || models == nil {
		var err error
		if models, err = LoadModels(dir); err != nil {
			return nil, err
		}
	}
	if name == "" {
		return nil, fmt.Errorf("no ?model=NAME; known models: %s (see `gated scanners`)", strings.Join(models.Names(), ", "))
	}
	md, ok := models[name]
	if !ok {
		return nil, fmt.Errorf("unknown model %q; known models: %s", name, strings.Join(models.Names(), ", "))
	}
	c := *md
	return &c, nil
}
