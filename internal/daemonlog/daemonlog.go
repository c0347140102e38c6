// Package daemonlog builds the daemons' structured logger (log/slog text
// format) and makes it read well in the systemd journal: when stderr is
// the journal's stream (JOURNAL_STREAM, see systemd.exec(5)), the time=
// attribute is dropped because journald stamps every line itself, and each
// line starts with a syslog priority prefix ("<3>" error ... "<7>" debug)
// so `journalctl -p warning` filters by level.
package daemonlog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Options configure New. The zero value logs at info level, with times,
// unless stderr is the journal.
type Options struct {
	// Level is read on every record, so a reload can change it; nil means info.
	Level slog.Leveler
	// Journal forces journal formatting on (true) or off (false); nil
	// detects it from JOURNAL_STREAM and the writer, which must then be
	// an *os.File.
	Journal *bool
}

// New returns a logger writing to w; a key given to With again replaces
// the earlier value (see Scoped).
func New(w io.Writer, o Options) *slog.Logger {
	if o.Level == nil {
		o.Level = slog.LevelInfo
	}
	journal := false
	if o.Journal != nil {
		journal = *o.Journal
	} else if f, ok := w.(*os.File); ok {
		journal = IsJournal(f, os.Getenv("JOURNAL_STREAM"))
	}
	if !journal {
		return slog.New(Scoped(slog.NewTextHandler(w, &slog.HandlerOptions{Level: o.Level})))
	}
	pw := &prefixWriter{w: w}
	inner := slog.NewTextHandler(pw, &slog.HandlerOptions{Level: o.Level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{} // journald has it, to the microsecond
			}
			return a
		}})
	return slog.New(Scoped(&journalHandler{inner: inner, w: pw, mu: &sync.Mutex{}}))
}

// IsJournal reports whether f is the stream JOURNAL_STREAM names
// ("DEVICE:INODE"). Comparing the inode, not just checking the variable is
// set, matters: a child started from a unit inherits the variable with its
// stderr redirected elsewhere.
func IsJournal(f *os.File, journalStream string) bool {
	if journalStream == "" {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(journalStream, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// Priority is the syslog priority journald reads from a "<N>" prefix.
func Priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// journalHandler prefixes each record's line with its priority. The text
// handler writes a record in one Write, so holding mu across Handle pairs
// the prefix with its own line.
type journalHandler struct {
	inner slog.Handler
	w     *prefixWriter
	mu    *sync.Mutex
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.w.prefix = "<" + strconv.Itoa(Priority(r.Level)) + ">"
	return h.inner.Handle(ctx, r)
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), w: h.w, mu: h.mu}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), w: h.w, mu: h.mu}
}

type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte(p.prefix), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Scoped wraps h so that a With of a key the logger already has replaces
// that attribute in place instead of adding a second one: a component's
// logger made with log.With("component", "clock") from the daemon's
// log.With("component", "gated") logs component=clock once. Attributes
// added after a WithGroup are h's alone.
func Scoped(h slog.Handler) slog.Handler { return &scoped{base: h, h: h} }

type scoped struct {
	base  slog.Handler // without attrs
	attrs []slog.Attr
	h     slog.Handler // base with attrs
}

func (s *scoped) Enabled(ctx context.Context, l slog.Level) bool { return s.h.Enabled(ctx, l) }

func (s *scoped) Handle(ctx context.Context, r slog.Record) error { return s.h.Handle(ctx, r) }

func (s *scoped) WithAttrs(as []slog.Attr) slog.Handler {
	attrs := slices.Clone(s.attrs)
	for _, a := range as {
		if i := slices.IndexFunc(attrs, func(b slog.Attr) bool { return b.Key == a.Key }); i >= 0 {
			attrs[i] = a
		} else {
			attrs = append(attrs, a)
		}
	}
	return &scoped{base: s.base, attrs: attrs, h: s.base.WithAttrs(attrs)}
}

func (s *scoped) WithGroup(name string) slog.Handler { return s.h.WithGroup(name) }
