// Package console is the staff's full-screen view of a gate, for a
// terminal at the turnstile: a large ADMIT or DENY on green or red with the
// reason in plain words, the day's counts, online or offline with the age
// of the last sync, and each scanner's health.
//
// A Screen is a gate.Signaller. It redraws on every decision and once a
// second (clocks and ages move). After Hold the verdict gives way to a
// neutral READY, so the next person in the queue is not greeted by the last
// one's green. Log lines can be routed to it (LogWriter) so they show at
// the bottom instead of tearing the screen.
package console

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gated-dev/gated/gate"
	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/gate/ops"
	"golang.org/x/sys/unix"
	"golang.org/x/text/width"
)

// StatusSource gives the gate's status (ops.Monitor).
type StatusSource interface {
	Status() ops.Status
}

// Options configure a Screen. Zero values are the defaults.
type Options struct {
	// Hold is how long a verdict fills the screen before READY returns
	// (default 4s).
	Hold time.Duration
	// Refresh is the redraw interval when nothing happens (default 1s).
	Refresh time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Size reports the terminal's columns and rows; nil asks the terminal
	// behind the writer, falling back to 80x24.
	Size func() (cols, rows int)
	// Location is the time zone of clock times shown (default time.Local):
	// staff compare them with the clock on the wall.
	Location *time.Location
}

// Screen draws the console. Its methods are safe for concurrent use.
type Screen struct {
	w   io.Writer
	src StatusSource
	o   Options

	mu     sync.Mutex
	last   *cache.Decision
	logs   []string
	active bool
}

// New returns a screen drawing to w, which should be a terminal.
func New(w io.Writer, src StatusSource, o Options) *Screen {
	if o.Hold <= 0 {
		o.Hold = 4 * time.Second
	}
	if o.Refresh <= 0 {
		o.Refresh = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.Size == nil {
		o.Size = func() (int, int) { return TermSize(w) }
	}
	return &Screen{w: w, src: src, o: o}
}

// SetHold changes Hold, e.g. after a configuration reload.
func (s *Screen) SetHold(d time.Duration) {
	if d <= 0 {
		return
	}
	s.mu.Lock()
	s.o.Hold = d
	s.mu.Unlock()
}

// Signal implements gate.Signaller: show the decision now.
func (s *Screen) Signal(e cache.Decision) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = &e
	s.drawLocked()
}

// Run takes over the terminal (alternate screen, no cursor) and redraws
// until ctx ends, then gives the terminal back as it found it.
func (s *Screen) Run(ctx context.Context) {
	s.mu.Lock()
	s.active = true
	io.WriteString(s.w, "\x1b[?1049h\x1b[?25l")
	s.drawLocked()
	s.mu.Unlock()
	t := time.NewTicker(s.o.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.active = false
			io.WriteString(s.w, "\x1b[0m\x1b[?25h\x1b[?1049l")
			s.mu.Unlock()
			return
		case <-t.C:
			s.mu.Lock()
			s.drawLocked()
			s.mu.Unlock()
		}
	}
}

// LogWriter returns a writer whose lines show at the foot of the screen
// (the last few), for a logger that would otherwise write over it.
func (s *Screen) LogWriter() io.Writer { return logWriter{s} }

type logWriter struct{ s *Screen }

func (l logWriter) Write(b []byte) (int, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	l.s.logs = append(l.s.logs, strings.Split(strings.TrimRight(string(b), "\n"), "\n")...)
	if n := len(l.s.logs); n > maxLogs {
		l.s.logs = append([]string(nil), l.s.logs[n-maxLogs:]...)
	}
	return len(b), nil
}

const maxLogs = 3

func (s *Screen) drawLocked() {
	if !s.active {
		return
	}
	cols, rows := s.o.Size()
	v := View{Status: s.src.Status(), Last: s.last, Logs: s.logs, Hold: s.o.Hold, Loc: s.o.Location}
	v.Status.Now = s.o.Now()
	io.WriteString(s.w, Paint(Layout(v, cols, rows), cols))
}

// View is everything one frame shows.
type View struct {
	Status ops.Status
	Last   *cache.Decision // the decision this screen last showed; nil before any
	Logs   []string
	Hold   time.Duration
	Loc    *time.Location
}

// Row is one line of the screen: its text and the SGR style of the whole
// line. One style a row keeps the layout testable as plain text.
type Row struct {
	Style string
	Text  string
}

// The styles. Bright white on green or red reads in daylight; the
// offline/trouble header is black on yellow, like a warning sign.
const (
	styleHeader  = "7"
	styleWarn    = "1;30;43"
	styleAdmit   = "1;97;42"
	styleDeny    = "1;97;41"
	styleIdle    = "1;97;100"
	styleBold    = "1"
	styleDim     = "2"
	stylePlain   = ""
	styleProblem = "1;31"
)

// Layout lays out a frame of cols x rows.
func Layout(v View, cols, rows int) []Row {
	if v.Loc == nil {
		v.Loc = time.Local
	}
	st := v.Status
	out := []Row{header(st, v.Loc, cols)}

	// The banner: as tall as a third to a half of the screen.
	word, style, line1, line2 := "READY", styleIdle, "scan the next ticket", ""
	if v.Last != nil {
		e := v.Last
		age := st.Now.Sub(e.At)
		if age < v.Hold {
			word, style = "DENY", styleDeny
			if e.Verdict == cache.Admit {
				word, style = "ADMIT", styleAdmit
			}
			line1 = word + ": " + e.Reason.Text()
			line2 = detail(e, v.Loc)
		} else {
			line2 = "previous: " + strings.ToUpper(e.Verdict) + " " + e.Reason.Text() + " at " + e.At.In(v.Loc).Format("15:04:05")
		}
	}
	var banner []string
	scale := 2
	if bigWidth(word, scale) > cols-2 {
		scale = 1
	}
	bannerRows := max(rows/2, glyphRows+4)
	if rows < 18 || bigWidth(word, scale) > cols-2 {
		bannerRows = 4 // too small for the big font: words only
		banner = []string{"", word, line1, line2}
	} else {
		banner = append([]string{""}, big(word, scale)...)
		banner = append(banner, "", line1, line2)
	}
	for len(banner) < bannerRows {
		// Centre the block vertically.
		if len(banner)%2 == 0 {
			banner = append(banner, "")
		} else {
			banner = append([]string{""}, banner...)
		}
	}
	for _, b := range banner {
		out = append(out, Row{style, center(b, cols)})
	}

	out = append(out, Row{styleBold, fmt.Sprintf(" Admitted %-6d Denied %-6d Outbox %-6d Since %s",
		st.Admitted, st.Denied, st.Outbox, st.Started.In(v.Loc).Format("15:04"))})
	out = append(out, scannerRows(st)...)
	out = append(out, Row{stylePlain, ""})
	recent := st.Recent
	for i := len(recent) - 1; i >= 0; i-- {
		out = append(out, Row{stylePlain, " " + gate.ConsoleLine(recent[i])})
	}
	// Logs take the last lines; the recent list gives way to them.
	logs := v.Logs
	for len(out)+len(logs) > rows && len(logs) > 0 && len(out) > 0 {
		if len(out) > 1+len(banner)+2 {
			out = out[:len(out)-1]
		} else {
			logs = logs[1:]
		}
	}
	for len(out)+len(logs) < rows {
		out = append(out, Row{stylePlain, ""})
	}
	for _, l := range logs {
		out = append(out, Row{styleDim, " " + l})
	}
	if len(out) > rows {
		out = out[:rows]
	}
	return out
}

func header(st ops.Status, loc *time.Location, cols int) Row {
	left := " gated · gate " + st.Gate
	if st.Event != "" {
		left += " · event " + st.Event
	}
	style := styleHeader
	var conn string
	switch {
	case st.Online == nil:
		conn = "STANDALONE (no sync configured)"
	case *st.Online:
		conn = "ONLINE"
		if !st.LastSync.IsZero() {
			conn += " · synced " + Age(st.Now.Sub(st.LastSync)) + " ago"
		}
	default:
		style = styleWarn
		conn = "OFFLINE"
		if !st.LastSync.IsZero() {
			conn += " · last sync " + Age(st.Now.Sub(st.LastSync)) + " ago"
		}
		if st.Outbox > 0 {
			conn += fmt.Sprintf(" · %d waiting, oldest %s", st.Outbox, Age(time.Duration(st.SyncLag)))
		}
	}
	if !st.Ready {
		style = styleWarn
	}
	right := conn + "   " + st.Now.In(loc).Format("15:04:05") + " "
	gap := cols - utf8.RuneCountInString(left) - utf8.RuneCountInString(right)
	if gap < 1 {
		gap = 1
	}
	return Row{style, left + strings.Repeat(" ", gap) + right}
}

func scannerRows(st ops.Status) []Row {
	if len(st.Scanners) == 0 {
		return []Row{{styleProblem, " Scanners: none running"}}
	}
	var parts []string
	style := stylePlain
	for _, s := range st.Scanners {
		mark := "●"
		if !s.Up {
			mark, style = "○", styleProblem
		}
		parts = append(parts, mark+" "+s.Name+" "+s.State)
	}
	rows := []Row{{style, " Scanners: " + strings.Join(parts, "   ")}}
	if st.StoreError != "" {
		rows = append(rows, Row{styleProblem, " STORE: " + st.StoreError + " (call a supervisor)"})
	}
	if st.Storage != nil && !st.Storage.OK {
		rows = append(rows, Row{styleProblem, " storage fault: call a supervisor · 存储故障：请联系主管 (" + st.Storage.Error + ")"})
	}
	if c := st.Clock; c != nil && !c.Trusted {
		by := map[string]string{"centre": "the centre's clock", "monotonic": "the time it kept", "floor": "the last time it used"}[c.Source]
		if by == "" {
			by = c.Source
		}
		rows = append(rows, Row{styleProblem, fmt.Sprintf(" 时钟不可信 CLOCK NOT TRUSTED: using %s, wall clock %s off (check NTP)",
			by, Age((time.Duration(c.OffsetMs) * time.Millisecond).Abs()))})
	}
	return rows
}

func detail(e *cache.Decision, loc *time.Location) string {
	why, parts := gate.StaffDetails(e, loc)
	if why != "" {
		parts = append([]string{why}, parts...)
	}
	parts = append(parts, e.At.In(loc).Format("15:04:05"), fmt.Sprintf("#%d", e.Seq))
	return strings.Join(parts, " · ")
}

// Age is a duration the way staff say it: 12s, 5m, 3h, 2d.
func Age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func center(s string, cols int) string {
	n := cells(s)
	if n >= cols {
		return s
	}
	return strings.Repeat(" ", (cols-n)/2) + s
}

// Paint turns rows into one write: each row placed by cursor address,
// styled, cut or padded to cols, so a frame never scrolls the terminal.
func Paint(rows []Row, cols int) string {
	var b strings.Builder
	for i, r := range rows {
		fmt.Fprintf(&b, "\x1b[%d;1H\x1b[0m", i+1)
		if r.Style != "" {
			fmt.Fprintf(&b, "\x1b[%sm", r.Style)
		}
		b.WriteString(fit(clean(r.Text), cols))
	}
	b.WriteString("\x1b[0m\x1b[J")
	return b.String()
}

func fit(s string, cols int) string {
	n := 0
	for i, r := range s {
		w := runeCells(r)
		if n+w > cols {
			return s[:i] + strings.Repeat(" ", cols-n)
		}
		n += w
	}
	return s + strings.Repeat(" ", cols-n)
}

// cells is how many terminal columns s takes: Chinese characters take
// two, and a row padded by runes would wrap and scroll the screen.
func cells(s string) int {
	n := 0
	for _, r := range s {
		n += runeCells(r)
	}
	return n
}

func runeCells(r rune) int {
	switch width.LookupRune(r).Kind() {
	case width.EastAsianWide, width.EastAsianFullwidth:
		return 2
	}
	return 1
}

// clean drops control characters: ticket details and log lines come from
// outside (a scanned code's bytes can hold escape sequences).
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

// Plain is a frame as text, one line a row without styles, for tests.
func Plain(rows []Row) string {
	var b strings.Builder
	for _, r := range rows {
		b.WriteString(strings.TrimRight(clean(r.Text), " "))
		b.WriteByte('\n')
	}
	return b.String()
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// TermSize is the size of the terminal behind w, or 80x24.
func TermSize(w io.Writer) (cols, rows int) {
	if f, ok := w.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 && ws.Row > 0 {
			return int(ws.Col), int(ws.Row)
		}
	}
	return 80, 24
}

// QuietInput turns off echo on a terminal used as a keyboard-wedge
// scanner's input (stdin:), so codes do not print over the screen; lines
// still end with Enter. restore gives the terminal back.
func QuietInput(f *os.File) (restore func(), err error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO | unix.ECHONL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
