// Package clock provides the gate's decision time: the wall clock while it
// can be trusted, and the best other reference when it cannot.
//
// A gate decides validity windows by time, so a wall clock that steps (an
// operator's typo, a box booting with a flat RTC battery before NTP has
// synchronised, a bad NTP answer) would admit expired tickets or deny
// valid ones. The Clock follows Go's monotonic clock between wall-clock
// readings, so it notices a step the moment the wall clock disagrees with
// where the previous reading plus elapsed time says it should be. It then
// decides by, in order of preference:
//
//  1. the centre's clock: the offset the sync link estimates from acks,
//     anchored to the monotonic clock when it was measured;
//  2. the wall clock, when the kernel says NTP has synchronised it since
//     (a step made by NTP is a correction; one made by hand clears the
//     kernel's synchronised flag until NTP confirms it);
//  3. the time it was already using, carried on by the monotonic clock;
//     at start, with nothing to carry on, a lower bound persisted in the
//     data directory at most once a minute.
//
// When the wall clock comes back into agreement with the reference, the
// Clock follows it again at once: a forward jump that is later corrected
// stops mattering at the next reading, without a restart.
package clock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Sources of a decision time, as State.Source reports them.
const (
	SourceWall      = "wall"      // the wall clock, trusted
	SourceCentre    = "centre"    // the centre's clock via the sync link's offset
	SourceMonotonic = "monotonic" // the last trusted time carried on by the monotonic clock
	SourceFloor     = "floor"     // the persisted lower bound, carried on by the monotonic clock
)

// Centre is the centre's clock as the sync link estimates it
// (gatelink.Link). ClockOffset is centre clock minus the gate's wall clock
// at the last ack; LastSync is when the last verified message from the
// centre arrived, zero before the first. Both are safe for concurrent use.
type Centre interface {
	ClockOffset() time.Duration
	LastSync() time.Time
}

// NTP reports whether the system clock is synchronised by NTP right now.
// An error means it cannot tell (no NTP daemon, not Linux): no evidence
// either way.
type NTP interface {
	Synchronized() (bool, error)
}

// Options configure a Clock. The zero value is a working clock on the
// system's wall clock with kernel NTP state and no centre or floor file.
type Options struct {
	// Wall reads the wall clock (default time.Now). Its monotonic
	// reading, if any, is dropped: steps must show.
	Wall func() time.Time
	// Mono reads a clock that never steps (default: Go's monotonic clock,
	// as time since New).
	Mono func() time.Duration
	// Centre is the sync link's clock estimate; nil: no centre.
	Centre Centre
	// NTP is the NTP state (default Kernel(): the synchronised flag
	// systemd-timesyncd and chronyd set, as timedatectl's NTPSynchronized
	// shows it).
	NTP NTP
	// FloorFile persists a lower bound of the time ("": none). It is read
	// at New and written by Run with the decision time (never a distrusted
	// wall reading) at most every PersistEvery.
	FloorFile string
	// Tolerance is how far the wall clock may disagree with the reference
	// before it counts as stepped (default 2s; NTP slews far slower).
	Tolerance time.Duration
	// Settle is how long after a step a new centre offset is not believed,
	// because its round trip may straddle the step (default 70s: the sync
	// link drops acks older than a minute).
	Settle time.Duration
	// CentreMaxAge is how long a centre offset, carried on by the
	// monotonic clock, stays usable without a fresh one (default 24h).
	CentreMaxAge time.Duration
	// PersistEvery is how often Run writes FloorFile (default 1m).
	PersistEvery time.Duration
	// Poll is how often Run reads the clocks between decisions, so steps
	// are seen when they happen (default 250ms).
	Poll time.Duration
	// Logger gets steps and changes of trust (default: discard).
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.Wall == nil {
		o.Wall = time.Now
	}
	if o.Mono == nil {
		start := time.Now()
		o.Mono = func() time.Duration { return time.Since(start) }
	}
	if o.NTP == nil {
		o.NTP = Kernel()
	}
	if o.Tolerance <= 0 {
		o.Tolerance = 2 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 70 * time.Second
	}
	if o.CentreMaxAge <= 0 {
		o.CentreMaxAge = 24 * time.Hour
	}
	if o.PersistEvery <= 0 {
		o.PersistEvery = time.Minute
	}
	if o.Poll <= 0 {
		o.Poll = 250 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// State is how the Clock decides time at one moment.
type State struct {
	// Trusted is true while decisions follow the wall clock.
	Trusted bool
	// Source is one of the Source constants.
	Source string
	// Offset is the decision time minus the wall clock.
	Offset time.Duration
	// Detail says why, for people.
	Detail string
}

// Clock is the gate's decision time. It is safe for concurrent use.
type Clock struct {
	o   Options
	log *slog.Logger

	mu      sync.Mutex
	started bool
	// The last raw reading, to see steps.
	prevWall time.Time
	prevMono time.Duration
	stepped  bool
	lastStep time.Duration // Mono at the last step seen
	// The decision time at the last reading, carried on by Mono.
	base     time.Time
	baseMono time.Duration
	state    State
	// The centre: the last offset and LastSync seen, when the offset last
	// changed, and the anchor its last believable value gave.
	cOff      time.Duration
	cSync     time.Time
	cSeen     bool
	cChanged  time.Duration
	cAnchor   time.Time
	cMono     time.Duration
	cValid    bool
	floor     time.Time
	persisted time.Duration
	persistOK bool
}

// New returns a Clock. A FloorFile that cannot be read is logged and
// treated as absent: the floor is a hint, never a reason not to start.
func New(o Options) *Clock {
	o.defaults()
	c := &Clock{o: o, log: o.Logger}
	if o.FloorFile != "" {
		f, err := readFloor(o.FloorFile)
		if err != nil && !os.IsNotExist(err) {
			c.log.Warn("clock floor file unreadable; starting without a lower bound", "file", o.FloorFile, "err", err)
		}
		c.floor = f
	}
	return c
}

// SetCentre attaches the centre's clock estimate (the sync link), made
// after the Clock.
func (c *Clock) SetCentre(ce Centre) {
	c.mu.Lock()
	c.o.Centre = ce
	c.mu.Unlock()
}

// NoNTP is an NTP state that never vouches for a step.
func NoNTP() NTP { return noNTP{} }

type noNTP struct{}

func (noNTP) Synchronized() (bool, error) {
	return false, errors.New("NTP state not read (clock_ntp: off)")
}

// Now is the decision time.
func (c *Clock) Now() time.Time {
	w, m := c.o.Wall().Round(0), c.o.Mono()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.read(w, m)
}

// State is how the Clock decides now.
func (c *Clock) State() State {
	c.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Run reads the clocks every Poll, so a step is seen when it happens even
// between decisions, and persists the floor. It returns when ctx is done,
// after a last write of the floor.
func (c *Clock) Run(ctx context.Context) {
	t := time.NewTicker(c.o.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.persist(true)
			return
		case <-t.C:
			c.Now()
			c.persist(false)
		}
	}
}

// read decides the time for a wall reading w at monotonic m. c.mu is held.
func (c *Clock) read(w time.Time, m time.Duration) time.Time {
	tol := c.o.Tolerance
	if c.started {
		if d := w.Sub(c.prevWall.Add(m - c.prevMono)); d > tol || d < -tol {
			c.stepped, c.lastStep = true, m
			c.log.Warn("wall clock stepped", "by", d.Round(time.Millisecond).String(), "wall", w.UTC().Format(time.RFC3339))
		}
	}
	c.prevWall, c.prevMono = w, m
	c.sampleCentre(w, m)

	var t time.Time
	st := State{Trusted: true, Source: SourceWall}
	carried := c.base.Add(m - c.baseMono)
	switch {
	case c.cValid && m-c.cMono <= c.o.CentreMaxAge:
		ct := c.cAnchor.Add(m - c.cMono)
		if near(w, ct, tol) {
			t, st.Detail = w, "agrees with the centre"
		} else {
			t, st = ct, State{Source: SourceCentre, Detail: "wall clock disagrees with the centre's"}
		}
	case c.started && near(w, carried, tol):
		t = w
	case c.ntpSynced():
		t, st.Detail = w, "NTP synchronised"
	case !c.started:
		if !c.floor.IsZero() && w.Before(c.floor.Add(-tol)) {
			t, st = c.floor, State{Source: SourceFloor, Detail: "wall clock is behind the last time this gate used; NTP not synchronised"}
		} else {
			t = w
		}
	default:
		src := c.state.Source
		if src != SourceFloor {
			src = SourceMonotonic
		}
		t, st = carried, State{Source: src, Detail: "wall clock stepped and nothing confirms it (no centre, NTP not synchronised)"}
	}
	st.Offset = t.Sub(w)
	if c.started && (st.Trusted != c.state.Trusted || st.Source != c.state.Source) {
		if st.Trusted {
			c.log.Info("wall clock trusted again; deciding by it", "detail", st.Detail)
		} else {
			c.log.Warn("wall clock not trusted; deciding by another clock (check NTP: timedatectl)", "source", st.Source,
				"wall_off_by", (-st.Offset).Round(time.Millisecond).String(), "detail", st.Detail)
		}
	} else if !c.started && !st.Trusted {
		c.log.Warn("wall clock not trusted at start; deciding by the last time this gate used (check NTP: timedatectl)",
			"wall", w.UTC().Format(time.RFC3339), "floor", c.floor.UTC().Format(time.RFC3339))
	}
	c.started, c.state, c.base, c.baseMono = true, st, t, m
	return t
}

// sampleCentre takes a new centre offset as an anchor on the monotonic
// clock, unless it may have been measured across a step. c.mu is held.
func (c *Clock) sampleCentre(w time.Time, m time.Duration) {
	if c.o.Centre == nil {
		return
	}
	ls := c.o.Centre.LastSync()
	if ls.IsZero() {
		return // no ack yet: the offset is a zero, not an estimate
	}
	off := c.o.Centre.ClockOffset()
	if c.cSeen && off == c.cOff && ls.Equal(c.cSync) {
		return
	}
	if !c.cSeen || off != c.cOff {
		c.cChanged = m
	}
	c.cSeen, c.cOff, c.cSync = true, off, ls
	// The offset is believable when it was measured wholly after the last
	// step: it changed at least Settle after it. An offset last changed
	// before then may be from a round trip that straddled the step.
	if c.stepped && c.cChanged-c.lastStep < c.o.Settle {
		return
	}
	c.cAnchor, c.cMono, c.cValid = w.Add(off), m, true
}

func (c *Clock) ntpSynced() bool {
	ok, err := c.o.NTP.Synchronized()
	return err == nil && ok
}

func near(a, b time.Time, tol time.Duration) bool {
	d := a.Sub(b)
	return d <= tol && d >= -tol
}

// persist writes the decision time to the floor file when due (or now,
// with force). It is the decision time, never a wall reading that is not
// trusted: carried on from a trusted time or from the floor itself, it is
// a lower bound still.
func (c *Clock) persist(force bool) {
	if c.o.FloorFile == "" {
		return
	}
	m := c.o.Mono()
	c.mu.Lock()
	due := force || !c.persistOK || m-c.persisted >= c.o.PersistEvery
	t := c.base.Add(m - c.baseMono)
	started := c.started
	c.mu.Unlock()
	if !due || !started {
		return
	}
	if err := writeFloor(c.o.FloorFile, t); err != nil {
		c.log.Warn("cannot persist the clock floor", "file", c.o.FloorFile, "err", err)
	}
	c.mu.Lock()
	c.persisted, c.persistOK = m, true
	c.mu.Unlock()
}

func readFloor(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// writeFloor replaces the file whole, so a power cut leaves the old or the
// new time, never a torn one.
func writeFloor(path string, t time.Time) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.WriteString(t.UTC().Format(time.RFC3339Nano) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
