package gate

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/gate/scanner"
	"github.com/gated-dev/gated/verify"
)

// provisioned returns n tickets and a store provisioned with them.
func provisioned(t *testing.T, n int) (*benchWorld, *cache.Store) {
	t.Helper()
	w, bundle := newBenchWorld(t, n)
	s, err := cache.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Provision(bundle); err != nil {
		t.Fatal(err)
	}
	return w, s
}

type recorder struct {
	mu  sync.Mutex
	got []cache.Decision
}

func (r *recorder) Signal(e cache.Decision) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, e)
}

// Several sources feed one gate; each scan is decided once, signalled after
// it was recorded, and a ticket read by two scanners is admitted once.
func TestRunSharesDecisionsAcrossScanners(t *testing.T) {
	w, s := provisioned(t, 3)
	rec := &recorder{}
	g := New("g1", s, verify.NewVerifier(verify.Policy{Event: "expo"}, w.trust), nil, rec)
	input := string(w.codes[0]) + "\n" + string(w.codes[1]) + "\n\n" + string(w.codes[2]) + "\n"
	now := func() time.Time { return w.now }
	g.Run(context.Background(), []scanner.Source{
		scanner.NewLines("a", strings.NewReader(input), now),
		scanner.NewLines("b", strings.NewReader(input), now),
	})
	if len(rec.got) != 6 {
		t.Fatalf("%d decisions, want 6", len(rec.got))
	}
	admits := map[string]int{}
	for _, e := range rec.got {
		if e.Verdict == cache.Admit {
			admits[e.Ticket]++
		} else if e.Reason != verify.ReasonAlreadyUsed {
			t.Errorf("%s: %s %s", e.Scanner, e.Reason, e.Detail)
		}
	}
	if len(admits) != 3 {
		t.Fatalf("admitted %v", admits)
	}
	for id, n := range admits {
		if n != 1 {
			t.Errorf("%s admitted %d times", id, n)
		}
	}
}

type fixedSource []scanner.Scan

func (f fixedSource) Name() string { return "fixed" }
func (f fixedSource) Run(ctx context.Context, out chan<- scanner.Scan) error {
	for _, s := range f {
		out <- s
	}
	return nil
}

// The AIM identifier a scanner reported is kept in the journal.
func TestSymbologyJournalled(t *testing.T) {
	w, s := provisioned(t, 1)
	g := New("g1", s, verify.NewVerifier(verify.Policy{Event: "expo"}, w.trust), nil)
	g.Run(context.Background(), []scanner.Source{fixedSource{{Data: w.codes[0], Symbology: "]Q1", Source: "fixed", At: w.now}}})
	var got []cache.Decision
	s.Journal(0, func(e cache.Decision) error { got = append(got, e); return nil })
	if len(got) != 1 || got[0].Symbology != "]Q1" || got[0].Verdict != cache.Admit {
		t.Fatalf("journal %+v", got)
	}
}

// With a clock set, decisions take their time from it, not from the scan:
// the clock (package clock) is what survives wall-clock steps.
func TestDecisionTimeFromClock(t *testing.T) {
	w, s := provisioned(t, 2)
	g := New("g1", s, verify.NewVerifier(verify.Policy{Event: "expo"}, w.trust), nil)
	late := w.now.Add(25 * time.Hour) // the bench tickets expire after 24 h
	if e := g.Decide(context.Background(), scanner.Scan{Data: w.codes[0], At: late}); e.Reason != verify.ReasonExpired {
		t.Fatalf("after expiry, by the scan's time: %s", e.Reason)
	}
	g.SetClock(func() time.Time { return w.now })
	e := g.Decide(context.Background(), scanner.Scan{Data: w.codes[1], At: late})
	if e.Verdict != cache.Admit || !e.At.Equal(w.now) {
		t.Fatalf("by the clock: %s %s at %v, want admit at %v", e.Verdict, e.Reason, e.At, w.now)
	}
}
