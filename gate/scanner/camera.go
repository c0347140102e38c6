package scanner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // dir: accepts GIF, JPEG and PNG files
	_ "image/jpeg"
	_ "image/png"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gated-dev/gated/qr"
)

// frames is a stream of images from a camera-like device. next returns the
// next frame's luma plane (the decoder needs nothing else); it blocks
// until one arrives or ctx ends. An error means the device is gone and
// must be reopened.
type frames interface {
	next(ctx context.Context) (lum []byte, w, h int, err error)
	Close() error
}

// errNoFrame is returned by next for a frame that carries no picture (a
// file that is not an image, or one refused): it is logged and passed over.
var errNoFrame = errors.New("not an image")

// errRefused is returned with errNoFrame for a frame or file refused
// before decoding: larger than the cap, or not a regular file.
var errRefused = errors.New("refused")

// DefaultMaxFrame is the largest frame decoded when Env.MaxFrame is zero:
// 4096x4096 is past any camera a gate uses, and its decode stays under
// 100 MB.
var DefaultMaxFrame = image.Pt(4096, 4096)

// decodeFrame decodes one image to luma after checking the dimensions its
// header claims: a decompression bomb (a PNG of 30000x30000 zeros is a few
// KB) would otherwise allocate gigabytes before a pixel is read.
func decodeFrame(r io.ReadSeeker, max image.Point) (lum []byte, w, h int, err error) {
	cfg, _, err := image.DecodeConfig(r)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%w: %v", errNoFrame, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > max.X || cfg.Height > max.Y {
		return nil, 0, 0, fmt.Errorf("%w: %w: %dx%d, larger than max_frame %dx%d", errNoFrame, errRefused, cfg.Width, cfg.Height, max.X, max.Y)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, 0, 0, err
	}
	img, _, err := image.Decode(r)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%w: %v", errNoFrame, err)
	}
	lum, w, h = qr.Luminance(img)
	return lum, w, h, nil
}

// Camera reads QR codes from frames: a V4L2 device, an MJPEG stream or a
// directory of images. A code held in view counts once: it is reported
// when it appears and again only after it was absent for Leave frames in
// a row.
type Camera struct {
	name    string
	open    func(ctx context.Context) (frames, error)
	leave   int
	reader  *qr.Reader
	now     func() time.Time
	log     *slog.Logger
	backoff Backoff
	// Frames passed over are logged at most once a minute, with a count:
	// a stream of hostile frames must not fill the disk with logs.
	skipped  int
	skipLast time.Time
}

func newCameraFromURI(kind, uri, where string, q url.Values, env Env) (Source, error) {
	c := &Camera{leave: 3, reader: qr.NewReader(nil), now: env.Now, backoff: env.Backoff.withDefaults()}
	max := env.MaxFrame
	if max == (image.Point{}) {
		max = DefaultMaxFrame
	}
	if v := q.Get("leave"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, fmt.Errorf("leave=%q: want the number of frames (1-1000) without a code after which it counts as gone", v)
		}
		c.leave = n
	}
	poll := 200 * time.Millisecond
	if v := q.Get("poll"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("poll=%q: want a duration such as 200ms", v)
		}
		poll = d
	}
	switch kind {
	case "dir":
		if where == "" {
			return nil, fmt.Errorf("no directory; use dir:/path")
		}
		c.name = "dir:" + where
		remove := false
		if v := q.Get("delete"); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("delete=%q: want true or false", v)
			}
			remove = b
		}
		c.open = func(context.Context) (frames, error) { return openDir(where, poll, remove, max, c.log) }
	case "mjpeg":
		raw := strings.TrimPrefix(uri, uri[:strings.Index(uri, ":")+1])
		if u, err := url.Parse(raw); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("want mjpeg:http://HOST/PATH (the camera's MJPEG stream address)")
		}
		c.name = "mjpeg:" + raw
		c.open = func(ctx context.Context) (frames, error) { return openMJPEG(ctx, env.HTTP, raw, max) }
	case "camera":
		if where == "" {
			return nil, fmt.Errorf("no device; use camera:/dev/video0")
		}
		c.name = "camera:" + where
		c.open = func(context.Context) (frames, error) { return openV4L2(where, max) }
	}
	c.log = env.Log.With("scanner", c.name)
	return c, nil
}

// Name implements Source.
func (c *Camera) Name() string { return c.name }

// Run implements Source; it returns only when ctx is done.
func (c *Camera) Run(ctx context.Context, out chan<- Scan) error {
	delay := c.backoff.Min
	failing := false
	var held presence
	held.leave = c.leave
	for ctx.Err() == nil {
		fr, err := c.open(ctx)
		if err != nil {
			if !failing {
				c.log.Warn("camera not available; retrying", "err", err)
				failing = true
			}
			if c.backoff.Sleep(ctx, delay) != nil {
				break
			}
			delay = min(delay*2, c.backoff.Max)
			continue
		}
		failing, delay = false, c.backoff.Min
		c.log.Info("camera connected")
		err = c.read(ctx, fr, &held, out)
		fr.Close()
		if ctx.Err() != nil {
			break
		}
		c.log.Warn("camera lost; reopening", "err", err)
	}
	return nil
}

func (c *Camera) read(ctx context.Context, fr frames, held *presence, out chan<- Scan) error {
	for {
		lum, w, h, err := fr.next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errNoFrame) {
			c.skipped++
			if now := c.now(); now.Sub(c.skipLast) >= time.Minute || now.Before(c.skipLast) {
				c.log.Warn("frame skipped", "err", err, "skipped_since_last_report", c.skipped)
				c.skipped, c.skipLast = 0, now
			}
			continue
		}
		if err != nil {
			return err
		}
		text, derr := c.reader.DecodeLuma(lum, w, h)
		if derr != nil {
			text = ""
		}
		if !held.see(text) {
			continue
		}
		s := Scan{Data: []byte(text), Symbology: "]Q1", Source: c.name, At: c.now()}
		select {
		case out <- s:
		case <-ctx.Done():
			return nil
		}
	}
}

// presence tracks the code in view so a code held up to the camera counts
// once. see reports whether code (empty: none decoded) is a new read.
type presence struct {
	leave  int
	cur    string
	missed int
}

func (p *presence) see(code string) bool {
	if code == "" {
		if p.cur != "" {
			p.missed++
			if p.missed >= p.leave {
				p.cur, p.missed = "", 0
			}
		}
		return false
	}
	p.missed = 0
	if code == p.cur {
		return false
	}
	p.cur = code
	return true
}

// dirFrames yields image files of a directory in name order, and files
// that appear later as they appear. A file is read once. Only regular
// files are opened (no FIFO that would block, no device, no symlink out
// of the directory); a file refused for that or for its size is moved
// aside to DIR/.refused/, or, if it cannot be moved, remembered and
// skipped, so it is never retried.
type dirFrames struct {
	dir     string
	poll    time.Duration
	remove  bool // delete each file once read (a camera dropping frames)
	max     image.Point
	log     *slog.Logger
	seen    map[string]bool
	pending []string
}

// refusedDir is where dir: moves files it will not read.
const refusedDir = ".refused"

func openDir(dir string, poll time.Duration, remove bool, max image.Point, log *slog.Logger) (*dirFrames, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	return &dirFrames{dir: dir, poll: poll, remove: remove, max: max, log: log, seen: map[string]bool{}}, nil
}

func (d *dirFrames) Close() error { return nil }

func (d *dirFrames) next(ctx context.Context) ([]byte, int, int, error) {
	for len(d.pending) == 0 {
		ents, err := os.ReadDir(d.dir)
		if err != nil {
			return nil, 0, 0, err
		}
		for _, e := range ents {
			n := e.Name()
			if e.IsDir() || d.seen[n] || strings.HasPrefix(n, ".") {
				continue // dotfiles: a writer's temporary file, renamed when complete
			}
			d.seen[n] = true
			d.pending = append(d.pending, n)
		}
		sort.Strings(d.pending)
		if len(d.pending) == 0 {
			if err := sleepCtx(ctx, d.poll); err != nil {
				return nil, 0, 0, err
			}
		}
	}
	name := d.pending[0]
	d.pending = d.pending[1:]
	lum, w, h, err := d.read(name)
	if errors.Is(err, errRefused) {
		d.refuse(name, err)
	} else if d.remove {
		// Forget the name too, so memory does not grow with every frame.
		if rerr := os.Remove(filepath.Join(d.dir, name)); rerr == nil {
			delete(d.seen, name)
		}
	}
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%s: %w", name, err)
	}
	return lum, w, h, nil
}

// read decodes one file, opening it only if it is a regular file: not
// following a symlink, and without blocking on a FIFO swapped in after
// the directory was listed.
func (d *dirFrames) read(name string) ([]byte, int, int, error) {
	f, err := os.OpenFile(filepath.Join(d.dir, name), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, 0, 0, fmt.Errorf("%w: %w: a symlink", errNoFrame, errRefused)
		}
		return nil, 0, 0, fmt.Errorf("%w: %v", errNoFrame, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("%w: %v", errNoFrame, err)
	}
	if !st.Mode().IsRegular() {
		return nil, 0, 0, fmt.Errorf("%w: %w: not a regular file (%s)", errNoFrame, errRefused, st.Mode().Type())
	}
	return decodeFrame(f, d.max)
}

// refuse moves a refused file aside, once, so it is neither read again
// nor mistaken for a frame by whoever looks at the directory.
func (d *dirFrames) refuse(name string, why error) {
	aside := filepath.Join(d.dir, refusedDir)
	err := os.Mkdir(aside, 0o750)
	if err == nil || errors.Is(err, fs.ErrExist) {
		err = os.Rename(filepath.Join(d.dir, name), filepath.Join(aside, name))
	}
	if err != nil {
		d.log.Warn("file refused; cannot move it aside, skipping it from now on", "file", name, "why", why, "err", err)
		return
	}
	delete(d.seen, name) // gone from the directory
	d.log.Warn("file refused and moved aside", "file", name, "why", why, "to", filepath.Join(aside, name))
}

// mjpegFrames reads an IP camera's MJPEG stream: an HTTP response of type
// multipart/x-mixed-replace whose parts are JPEG frames.
type mjpegFrames struct {
	body io.ReadCloser
	mr   *partReader
	max  image.Point
}

func (m *mjpegFrames) Close() error { return m.body.Close() }

func (m *mjpegFrames) next(ctx context.Context) ([]byte, int, int, error) {
	part, err := m.mr.next()
	if err != nil {
		return nil, 0, 0, err
	}
	return decodeFrame(bytes.NewReader(part), m.max)
}
