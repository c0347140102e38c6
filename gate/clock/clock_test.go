package clock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// world is true time and what the gate can see of it: a wall clock off
// by wallOff, a monotonic clock, the kernel's NTP flag and the sync link.
type world struct {
	truth   time.Time
	mono    time.Duration
	wallOff time.Duration
	ntp     string // "synced", "unsynced", "" (unknown)
}

func (w *world) wall() time.Time          { return w.truth.Add(w.wallOff) }
func (w *world) monotonic() time.Duration { return w.mono }
func (w *world) Synchronized() (bool, error) {
	switch w.ntp {
	case "synced":
		return true, nil
	case "unsynced":
		return false, nil
	}
	return false, errors.New("unknown")
}

type fakeCentre struct {
	off  time.Duration
	sync time.Time
}

func (f *fakeCentre) ClockOffset() time.Duration { return f.off }
func (f *fakeCentre) LastSync() time.Time        { return f.sync }

// step is one moment of a scenario: time passes, then things change,
// then the clock is read and checked.
type step struct {
	adv     time.Duration  // true (and monotonic) time passing first
	wall    *time.Duration // the wall clock's error from now on
	ntp     *string
	ack     bool           // the link measures the centre's offset now
	garbage *time.Duration // or stores this bad offset now
	// want is the decision time's error against true time; source the State's.
	want   time.Duration
	source string
}

func d(x time.Duration) *time.Duration { return &x }
func s(x string) *string               { return &x }

func TestJumpScenarios(t *testing.T) {
	const h = time.Hour
	start := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		ntp    string
		centre bool
		floor  time.Duration // persisted floor, relative to true start; 0: none
		steps  []step
	}{
		{name: "forward, no centre, NTP unsynchronised: carried on", ntp: "unsynced", steps: []step{
			{adv: time.Second, source: SourceWall},
			{adv: time.Second, wall: d(8 * h), source: SourceMonotonic},
			{adv: time.Minute, source: SourceMonotonic},
		}},
		{name: "back, NTP unknown: carried on", steps: []step{
			{adv: time.Second, source: SourceWall},
			{adv: time.Second, wall: d(-3 * h), source: SourceMonotonic},
			{adv: 10 * time.Minute, source: SourceMonotonic},
		}},
		{name: "forward then corrected, no centre", ntp: "unsynced", steps: []step{
			{adv: time.Second, source: SourceWall},
			{adv: time.Second, wall: d(8 * h), source: SourceMonotonic},
			{adv: 5 * time.Minute, source: SourceMonotonic},
			{adv: time.Second, wall: d(0), ntp: s("synced"), source: SourceWall},
			{adv: time.Second, source: SourceWall},
		}},
		{name: "forward then corrected, centre known before", centre: true, steps: []step{
			{adv: time.Second, ack: true, source: SourceWall},
			{adv: time.Second, wall: d(8 * h), source: SourceCentre},
			{adv: 5 * time.Second, ack: true, source: SourceCentre}, // within Settle: not believed, not needed
			{adv: 2 * time.Minute, ack: true, source: SourceCentre}, // believed: says the same
			{adv: time.Second, wall: d(0), garbage: d(-4 * h), source: SourceWall},
			{adv: 10 * time.Second, ack: true, source: SourceWall},
		}},
		{name: "forward, NTP synchronised and no centre: NTP's step is followed", ntp: "synced", steps: []step{
			{adv: time.Second, source: SourceWall},
			{adv: time.Second, wall: d(8 * h), want: 8 * h, source: SourceWall},
		}},
		{name: "boot with RTC ahead before NTP sync, centre arrives", ntp: "unsynced", centre: true, steps: []step{
			{wall: d(8 * h), want: 8 * h, source: SourceWall}, // no evidence yet
			{adv: time.Second, ack: true, source: SourceCentre},
			{adv: time.Minute, source: SourceCentre},
			{adv: time.Second, wall: d(0), ntp: s("synced"), source: SourceWall},
		}},
		{name: "boot with RTC behind the floor before NTP sync", ntp: "unsynced", floor: -time.Minute, steps: []step{
			{wall: d(-2 * 365 * 24 * h), want: -time.Minute, source: SourceFloor},
			{adv: 30 * time.Second, want: -time.Minute, source: SourceFloor},
			{adv: time.Second, wall: d(0), ntp: s("synced"), source: SourceWall},
		}},
		{name: "boot with RTC behind the floor, centre configured but not heard yet", ntp: "unsynced", centre: true, floor: -time.Minute, steps: []step{
			{wall: d(-2 * 365 * 24 * h), want: -time.Minute, source: SourceFloor},
			{adv: time.Second, ack: true, source: SourceCentre},
		}},
		{name: "boot with RTC behind, NTP already synchronised: NTP wins over the floor", ntp: "synced", floor: time.Hour, steps: []step{
			{source: SourceWall},
		}},
		{name: "slew within tolerance is followed", ntp: "unsynced", steps: []step{
			{adv: time.Second, source: SourceWall},
			{adv: time.Minute, wall: d(time.Second), want: time.Second, source: SourceWall},
			{adv: time.Minute, wall: d(2 * time.Second), want: 2 * time.Second, source: SourceWall},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := &world{truth: start, ntp: tt.ntp}
			o := Options{Wall: w.wall, Mono: w.monotonic, NTP: w}
			var fc *fakeCentre
			if tt.centre {
				fc = &fakeCentre{}
				o.Centre = fc
			}
			if tt.floor != 0 {
				o.FloorFile = filepath.Join(t.TempDir(), "floor")
				if err := writeFloor(o.FloorFile, start.Add(tt.floor)); err != nil {
					t.Fatal(err)
				}
			}
			c := New(o)
			for i, st := range tt.steps {
				w.truth, w.mono = w.truth.Add(st.adv), w.mono+st.adv
				if st.wall != nil {
					w.wallOff = *st.wall
				}
				if st.ntp != nil {
					w.ntp = *st.ntp
				}
				if st.ack {
					fc.off, fc.sync = -w.wallOff, w.wall()
				}
				if st.garbage != nil {
					fc.off, fc.sync = *st.garbage, w.wall()
				}
				got := c.Now()
				state := c.State()
				if err := got.Sub(w.truth) - st.want; err > 10*time.Millisecond || err < -10*time.Millisecond {
					t.Errorf("step %d: decision time off by %s from true time, want %s (state %+v)", i, got.Sub(w.truth), st.want, state)
				}
				if state.Source != st.source {
					t.Errorf("step %d: source %q, want %q (%s)", i, state.Source, st.source, state.Detail)
				}
				if state.Trusted != (st.source == SourceWall) {
					t.Errorf("step %d: trusted %v with source %s", i, state.Trusted, state.Source)
				}
			}
		})
	}
}

// A step the clock sees only after the fact (no reading in between) is
// still a step: the decision follows the monotonic clock from the last
// reading, not the wall.
func TestStepBetweenReadingsIsSeen(t *testing.T) {
	w := &world{truth: time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC), ntp: "unsynced"}
	c := New(Options{Wall: w.wall, Mono: w.monotonic, NTP: w})
	c.Now()
	w.truth, w.mono, w.wallOff = w.truth.Add(time.Hour), w.mono+time.Hour, 8*time.Hour
	if got := c.Now(); !got.Equal(w.truth) {
		t.Fatalf("after an hour and a step: %s, want %s", got, w.truth)
	}
}

// The floor is the decision time, never a distrusted wall reading, and is
// written about once a minute.
func TestFloorPersisted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "clock-floor")
		w := &world{ntp: "unsynced"}
		var wallOff atomic.Int64
		c := New(Options{FloorFile: file, NTP: w, Wall: func() time.Time { return time.Now().Add(time.Duration(wallOff.Load())) }})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		time.Sleep(61 * time.Second)
		f, err := readFloor(file)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(f); d < 0 || d > time.Minute {
			t.Fatalf("floor %s is %s behind now", f, d)
		}
		// Distrusted: a jumped wall clock is never persisted.
		wallOff.Store(int64(8 * time.Hour))
		time.Sleep(3 * time.Minute)
		cancel()
		<-done
		if f, _ := readFloor(file); f.After(time.Now()) {
			t.Fatalf("floor %s written from a distrusted wall clock (now %s)", f, time.Now())
		}
		b, _ := os.ReadFile(file)
		if !strings.HasSuffix(string(b), "\n") {
			t.Fatalf("floor file %q", b)
		}
	})
}

// A damaged floor file is a warning, not a failure to start.
func TestFloorFileDamaged(t *testing.T) {
	file := filepath.Join(t.TempDir(), "clock-floor")
	os.WriteFile(file, []byte("\x00\x00garbage"), 0o644)
	w := &world{truth: time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)}
	c := New(Options{Wall: w.wall, Mono: w.monotonic, NTP: w, FloorFile: file})
	if got := c.Now(); !got.Equal(w.truth) {
		t.Fatalf("%s, want the wall clock %s", got, w.truth)
	}
}

func TestFileClock(t *testing.T) {
	file := filepath.Join(t.TempDir(), "clock")
	fc := FileClock{Path: file}
	if _, err := fc.Synchronized(); err == nil {
		t.Fatal("missing file: NTP state known")
	}
	os.WriteFile(file, []byte("offset=8h\nntp=unsynchronised\n"), 0o644)
	if d := time.Until(fc.Now()); d < 8*time.Hour-time.Second || d > 8*time.Hour+time.Second {
		t.Fatalf("offset %s, want 8h", d)
	}
	if ok, err := fc.Synchronized(); ok || err != nil {
		t.Fatalf("Synchronized() = %v, %v", ok, err)
	}
}
