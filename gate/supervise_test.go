package gate

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/gate/scanner"
	"github.com/gated-dev/gated/gate/scanner/scannertest"
	"github.com/gated-dev/gated/verify"
)

// events is a ScannerMonitor that records what it is told.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, s)
}
func (e *events) ScannerStarted(name string, src any)   { e.add("started " + name) }
func (e *events) ScannerStopped(name string, err error) { e.add("stopped " + name) }
func (e *events) ScannerRemoved(name string)            { e.add("removed " + name) }
func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

// blocking is a source that reads nothing until its context ends, or
// until end is closed.
type blocking struct {
	name string
	end  chan struct{}
	done chan struct{}
}

func newBlocking(name string) *blocking {
	return &blocking{name: name, end: make(chan struct{}), done: make(chan struct{})}
}
func (b *blocking) Name() string { return b.name }
func (b *blocking) Run(ctx context.Context, out chan<- scanner.Scan) error {
	defer close(b.done)
	select {
	case <-ctx.Done():
	case <-b.end:
	}
	return nil
}
func (b *blocking) ended() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

func supervisorGate(t *testing.T, n int) (*benchWorld, *Gate, *recorder) {
	w, s := provisioned(t, n)
	rec := &recorder{}
	return w, New("g1", s, verify.NewVerifier(verify.Policy{Event: "expo"}, w.trust), nil, rec), rec
}

// Started sources run and are reported; one that ends on its own is
// reported stopped and signalled on Ended; cancelling the context stops
// the rest, and Wait returns once every source has ended.
func TestSupervisorStartAndStop(t *testing.T) {
	_, g, _ := supervisorGate(t, 1)
	mon := &events{}
	sup := NewSupervisor(g, mon)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newBlocking("a"), newBlocking("b")
	sup.Start(ctx, "uri-a", a)
	sup.Start(ctx, "uri-b", b)
	if sup.Count() != 2 || !sup.Has("uri-a") || !sup.Has("uri-b") || sup.Has("a") {
		t.Fatalf("count %d, has a %v b %v", sup.Count(), sup.Has("uri-a"), sup.Has("uri-b"))
	}
	close(a.end)
	select {
	case <-sup.Ended():
	case <-time.After(10 * time.Second):
		t.Fatal("no Ended after a source ended")
	}
	if sup.Count() != 1 || sup.Has("uri-a") {
		t.Fatalf("count %d after a ended", sup.Count())
	}
	if b.ended() {
		t.Fatal("b stopped with a")
	}
	cancel()
	sup.Wait()
	if !b.ended() {
		t.Fatal("Wait returned before b ended")
	}
	want := []string{"started a", "started b", "stopped a", "stopped b"}
	if got := mon.list(); !slices.Equal(got, want) {
		t.Fatalf("monitor told %q, want %q", got, want)
	}
}

// Apply stops the sources whose URI is gone (reported removed, not
// stopped), keeps the others running and starts the new ones.
func TestSupervisorApplyRemovesSource(t *testing.T) {
	_, g, _ := supervisorGate(t, 1)
	mon := &events{}
	sup := NewSupervisor(g, mon)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b, c := newBlocking("a"), newBlocking("b"), newBlocking("c")
	sup.Start(ctx, "uri-a", a)
	sup.Start(ctx, "uri-b", b)
	added, removed := sup.Apply(ctx, []string{"uri-a", "uri-c"}, map[string]scanner.Source{"uri-c": c})
	if !slices.Equal(added, []string{"uri-c"}) || !slices.Equal(removed, []string{"uri-b"}) {
		t.Fatalf("added %q removed %q", added, removed)
	}
	<-b.done
	if a.ended() || c.ended() {
		t.Fatal("a kept source was stopped")
	}
	if sup.Count() != 2 || sup.Has("uri-b") || !sup.Has("uri-c") {
		t.Fatalf("count %d after apply", sup.Count())
	}
	cancel()
	sup.Wait()
	want := []string{"started a", "started b", "removed b", "started c", "stopped a", "stopped c"}
	got := mon.list()
	slices.Sort(got[4:]) // stopped by cancel, in any order
	if !slices.Equal(got, want) {
		t.Fatalf("monitor told %q, want %q", got, want)
	}
}

// A supervised HID source whose scanner is unplugged keeps running and
// looks for it again with backoff (100ms doubling): plugged back in 1s
// after, it is found at 1.5s, and its scans are decided.
func TestSupervisorSourceReopensWithBackoff(t *testing.T) {
	w, bundle := newBenchWorld(t, 2)
	m, err := scanner.LoadModels("")
	if err != nil {
		t.Fatal(err)
	}
	l := m["honeywell-xenon-1950g"].HIDPOS
	synctest.Test(t, func(t *testing.T) {
		// The store's group commit runs in the bubble.
		store, err := cache.Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		if _, err := store.Provision(bundle); err != nil {
			t.Fatal(err)
		}
		rec := &recorder{}
		g := New("g1", store, verify.NewVerifier(verify.Policy{Event: "expo"}, w.trust), nil, rec)
		first := &scannertest.Playback{Reports: scannertest.POSReports(l, "]Q1", w.codes[0]), Unplug: true}
		bus := &scannertest.Bus{}
		bus.Add(scanner.HIDInfo{Path: "fake-1", VID: 0x0c2e, PID: 0x0b67}, first)
		src, err := scanner.Open("hid:?model=honeywell-xenon-1950g", scanner.Env{HID: bus, Models: m})
		if err != nil {
			t.Fatal(err)
		}
		mon := &events{}
		sup := NewSupervisor(g, mon)
		ctx, cancel := context.WithCancel(context.Background())
		sup.Start(ctx, "hid", src)
		decided := func() int {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return len(rec.got)
		}
		synctest.Wait()
		<-first.Drained()
		unplugged := time.Now()
		synctest.Wait()
		if n := decided(); n != 1 {
			t.Fatalf("%d decisions before the unplug, want 1", n)
		}
		time.Sleep(time.Second)
		second := &scannertest.Playback{Reports: scannertest.POSReports(l, "]Q1", w.codes[1])}
		bus.Add(scanner.HIDInfo{Path: "fake-2", VID: 0x0c2e, PID: 0x0b67}, second)
		time.Sleep(1400*time.Millisecond - time.Since(unplugged))
		synctest.Wait()
		if n := decided(); n != 1 || bus.Opened() != 1 {
			t.Fatalf("at %v: %d decisions, opened %d times: reopened before its backoff", time.Since(unplugged), n, bus.Opened())
		}
		time.Sleep(1600*time.Millisecond - time.Since(unplugged))
		synctest.Wait()
		if n := decided(); n != 2 || bus.Opened() != 2 {
			t.Fatalf("at %v: %d decisions, opened %d times, want 2 and 2", time.Since(unplugged), n, bus.Opened())
		}
		if !sup.Has("hid") {
			t.Fatal("source ended with its device")
		}
		cancel()
		sup.Wait()
		if got := fmt.Sprint(mon.list()); got != "[started hid:0c2e:0b67 stopped hid:0c2e:0b67]" {
			t.Fatalf("monitor told %s", got)
		}
	})
}
