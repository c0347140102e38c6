// Package gate is the decision loop: scans from every source are parsed,
// verified, decided against the store, committed, and only then signalled.
package gate

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/gate/scanner"
	"github.com/gated-dev/gated/internal/ratelog"
	"github.com/gated-dev/gated/verify"
)

// Signaller shows a committed decision to people or devices: the console,
// a JSON stream, a relay. Signal is called from several goroutines at once.
type Signaller interface {
	Signal(e cache.Decision)
}

// Store is what the loop needs of the gate's store.
type Store interface {
	Entry(id verify.TicketID) (*verify.TicketEntry, error)
	Record(ctx context.Context, v *verify.Verifier, s cache.Scan) (cache.Decision, error)
}

// Gate decides scans. It is safe for concurrent use.
type Gate struct {
	id       string
	store    Store
	verifier atomic.Pointer[verify.Verifier]
	signals  []Signaller
	log      *slog.Logger
	// rl bounds "decision not recorded": on a full or failing disk it
	// would come once per scan and fill what is left of the disk.
	rl *ratelog.Limiter
	// clock is the decision time; nil: the time each scan was read. A
	// wall clock that steps (a typo, a flat RTC battery before NTP) must
	// not decide validity, and must stop mattering once fixed: gated
	// sets a clock.Clock here.
	clock atomic.Pointer[func() time.Time]
}

// New returns a gate with id deciding against store with v.
func New(id string, store Store, v *verify.Verifier, log *slog.Logger, signals ...Signaller) *Gate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gate{id: id, store: store, signals: signals, log: log, rl: ratelog.New(0, nil)}
	g.verifier.Store(v)
	return g
}

// SetClock makes now the decision time instead of the time each scan was
// read (its Scan.At).
func (g *Gate) SetClock(now func() time.Time) { g.clock.Store(&now) }

// SetVerifier swaps in a verifier, e.g. after a new trust list arrived.
// Scans already being decided finish with the old one.
func (g *Gate) SetVerifier(v *verify.Verifier) { g.verifier.Store(v) }

// Decide decides one scan, commits it, then signals it. It returns the
// journal entry, which on a storage failure is an uncommitted DENY.
func (g *Gate) Decide(ctx context.Context, s scanner.Scan) cache.Decision {
	v := g.verifier.Load()
	sc := g.check(v, s)
	e, err := g.store.Record(ctx, v, sc)
	if err != nil {
		if ok, n := g.rl.Allow("decision not recorded"); ok {
			g.log.Error("decision not recorded", "err", err, "scanner", s.Source, "repeated", n)
		}
	}
	for _, sig := range g.signals {
		sig.Signal(e)
	}
	return e
}

// check parses and verifies a scan outside the store's transaction, so
// signature checks of concurrent scanners run in parallel. A panic here
// (a bug meeting hostile input) becomes a malformed DENY, never a crash.
func (g *Gate) check(v *verify.Verifier, s scanner.Scan) (sc cache.Scan) {
	at := s.At
	if now := g.clock.Load(); now != nil {
		at = (*now)()
	}
	sc = cache.Scan{At: at.UTC(), Gate: g.id, Scanner: s.Source, Symbology: s.Symbology}
	defer func() {
		if r := recover(); r != nil {
			g.log.Error("scan check panicked", "panic", r, "scanner", s.Source, "scan", fmt.Sprintf("%q", s.Data))
			sc.Checked, sc.Token, sc.Pre = nil, nil, verify.Result{Reason: verify.ReasonMalformed, Detail: "scan could not be checked"}
		}
	}()
	if s.Truncated {
		sc.Pre = verify.Result{Reason: verify.ReasonMalformed, Detail: fmt.Sprintf("scan longer than %d bytes", len(s.Data))}
	} else if tok, err := verify.Parse(s.Data); err != nil {
		sc.Pre = verify.Result{Reason: verify.ReasonMalformed, Detail: err.Error()}
	} else {
		sc.Code = string(bytes.TrimRight(s.Data, "\r\n"))
		var entry *verify.TicketEntry
		if tok.Kind == verify.KindRotatingShort {
			entry, err = g.store.Entry(tok.Credential.Ticket)
		}
		if err != nil {
			sc.Token, sc.Pre = tok, verify.Result{Reason: verify.ReasonStorageFailure, Detail: err.Error()}
		} else {
			sc.Checked = v.Check(tok, sc.At, entry)
		}
	}
	return sc
}

// Run reads every source and decides their scans until all sources end or
// ctx is done. Each source is read in order; sources run concurrently and
// share commits. A scan that was read is always decided and recorded, even
// when ctx ends while it is in flight.
func (g *Gate) Run(ctx context.Context, sources []scanner.Source) {
	decideCtx := context.WithoutCancel(ctx)
	var wg sync.WaitGroup
	for _, src := range sources {
		ch := make(chan scanner.Scan)
		go func() {
			if err := src.Run(ctx, ch); err != nil {
				g.log.Error("scanner stopped", "scanner", src.Name(), "err", err)
			}
			close(ch)
		}()
		fb, _ := src.(scanner.Feedback)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case s, ok := <-ch:
					if !ok {
						return
					}
					e := g.Decide(decideCtx, s)
					if fb != nil {
						if err := fb.Signal(decideCtx, s, e.Verdict == cache.Admit); err != nil {
							g.log.Warn("scanner feedback failed", "scanner", src.Name(), "err", err)
						}
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
}
