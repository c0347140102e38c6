// Package ingesttest is the conformance suite of centre.IngestStore: every
// implementation (the bbolt store in central.db, PostgreSQL in pgstore)
// runs the same tests, so gatesync books entries the same way on either.
package ingesttest

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	"github.com/gated-dev/gated/wire/wiretest"
)

// Opener returns n handles on one new, empty store: separate connections
// where the store can be shared between processes (PostgreSQL), or the
// same handle n times where one process owns it (bbolt). The test closes
// nothing: the opener registers its own cleanup.
type Opener func(t *testing.T, n int) []centre.IngestStore

// Run runs the suite against the stores open makes.
func Run(t *testing.T, open Opener) {
	t.Run("ExactlyOnce", func(t *testing.T) { testExactlyOnce(t, open(t, 1)[0]) })
	t.Run("Reentry", func(t *testing.T) { testReentry(t, open(t, 1)[0]) })
	t.Run("RenamedGate", func(t *testing.T) { testRenamedGate(t, open(t, 1)[0]) })
	t.Run("Records", func(t *testing.T) { testRecords(t, open(t, 1)[0]) })
	t.Run("GateState", func(t *testing.T) { testGateState(t, open(t, 1)[0]) })
	t.Run("RemoveGate", func(t *testing.T) { testRemoveGate(t, open(t, 1)[0]) })
	t.Run("GapFilledLate", func(t *testing.T) { testGapFilledLate(t, open(t, 1)[0]) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open(t, 4)) })
	t.Run("UsesLog", func(t *testing.T) { testUsesLog(t, open(t, 1)[0]) })
	t.Run("UsesLogConcurrent", func(t *testing.T) { testUsesLogConcurrent(t, open(t, 4)) })
	t.Run("Unproven", func(t *testing.T) { testUnproven(t, open(t, 1)[0]) })
}

// at is the time batches are received; microseconds, the finest time
// PostgreSQL keeps.
var at = time.Date(2026, 11, 23, 17, 0, 0, 123456000, time.UTC)

func ticket(i int) verify.TicketID {
	var id verify.TicketID
	id[0], id[1], id[len(id)-1] = 0x7a, byte(i>>8), byte(i)
	return id
}

// Batch builds a parsed batch of gate g's entries with the given seqs,
// admits (or denials) of ticket tk with reason.
func Batch(t testing.TB, g, instance string, tk verify.TicketID, verdict string, reason verify.Reason, seqs ...uint64) *wire.ParsedBatch {
	t.Helper()
	return wiretest.Batch(t, wire.Batch{Gate: g, Instance: instance, ClockOffsetMs: -12}, seqs, func(s uint64) map[string]any {
		return wiretest.Entry(g, instance, s, verdict, reason, tk, at.Add(-time.Duration(s)*time.Second))
	})
}

// WithCode sets the scanned code of every entry of b (the centre checks
// it before it books an admission as a use) and returns b.
func WithCode(b *wire.ParsedBatch, code string) *wire.ParsedBatch {
	for i := range b.Parsed {
		b.Parsed[i].Code = code
	}
	return b
}

func in(b *wire.ParsedBatch) centre.IngestBatch {
	return centre.IngestBatch{Venue: "v", Batch: b, At: at}
}

func testExactlyOnce(t *testing.T, s centre.IngestStore) {
	for _, tc := range []struct {
		name                 string
		b                    *wire.ParsedBatch
		new, dup             int
		storedTo             uint64
		conflicts, conflictN int
	}{
		{"first", Batch(t, "g1", "i1", ticket(0), "deny", "revoked", 1, 2, 3), 3, 0, 3, 0, 0},
		{"resent", Batch(t, "g1", "i1", ticket(0), "deny", "revoked", 1, 2, 3), 0, 3, 3, 0, 0},
		{"overlap", Batch(t, "g1", "i1", ticket(0), "deny", "revoked", 3, 4), 1, 1, 4, 0, 0},
		{"out of order leaves a gap", Batch(t, "g1", "i1", ticket(0), "deny", "revoked", 7, 8), 2, 0, 4, 0, 0},
		{"resent after the gap", Batch(t, "g1", "i1", ticket(0), "deny", "revoked", 7, 8), 0, 2, 4, 0, 0},
		{"gap filled", Batch(t, "g1", "i1", ticket(0), "deny", "revoked", 5, 6), 2, 0, 8, 0, 0},
		{"new store instance restarts seqs", Batch(t, "g1", "i2", ticket(1), "admit", "ok", 1), 1, 0, 1, 0, 0},
		{"same ticket at another gate", Batch(t, "g2", "i3", ticket(1), "admit", "ok", 1), 1, 0, 1, 1, 1},
		{"and again at the first", Batch(t, "g1", "i2", ticket(1), "admit", "ok", 2), 1, 0, 2, 1, 2},
		{"replay of the conflicting entry", Batch(t, "g2", "i3", ticket(1), "admit", "ok", 1), 0, 1, 1, 0, 2},
		{"twice in one batch", Batch(t, "g3", "i4", ticket(2), "admit", "ok", 1, 2), 2, 0, 2, 1, 3},
		{"empty batch (ping)", &wire.ParsedBatch{Batch: wire.Batch{V: 1, Gate: "g1", Instance: "i1"}}, 0, 0, 8, 0, 3},
	} {
		res, err := s.Ingest(in(tc.b))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if res.New != tc.new || res.Duplicate != tc.dup || res.StoredTo != tc.storedTo || len(res.Conflicts) != tc.conflicts {
			t.Errorf("%s: new %d dup %d stored_to %d conflicts %d; want %d %d %d %d", tc.name,
				res.New, res.Duplicate, res.StoredTo, len(res.Conflicts), tc.new, tc.dup, tc.storedTo, tc.conflicts)
		}
		if cs, err := s.Conflicts(); err != nil || len(cs) != tc.conflictN {
			t.Errorf("%s: %d conflicts recorded (%v); want %d", tc.name, len(cs), err, tc.conflictN)
		}
	}
	es, err := s.Entries(0, 1000)
	if err != nil || len(es) != 13 {
		t.Fatalf("%d entries (%v); want 13", len(es), err)
	}
	cs, _ := s.Conflicts()
	want := []struct {
		kind, first, second string
	}{{"two_gates", "i2-1", "i3-1"}, {"twice", "i2-1", "i2-2"}, {"twice", "i4-1", "i4-2"}}
	for i, w := range want {
		cf := cs[i]
		if cf.Kind != w.kind || cf.First.EntryID != w.first || cf.Second.EntryID != w.second || !cf.DetectedAt.Equal(at) {
			t.Errorf("conflict %d: %+v; want %+v", i, cf, w)
		}
		if i > 0 && cf.N <= cs[i-1].N {
			t.Errorf("conflict numbers not increasing: %d after %d", cf.N, cs[i-1].N)
		}
	}
	if cs[0].Ticket != ticket(1) || cs[0].First.Gate != "g1" || cs[0].Second.Gate != "g2" || cs[0].Second.Venue != "v" ||
		!cs[0].First.At.Equal(at.Add(-time.Second)) {
		t.Errorf("first conflict: %+v", cs[0])
	}
}

func testReentry(t *testing.T, s centre.IngestStore) {
	re := ticket(9)
	allows := func(id verify.TicketID) bool { return id == re }
	for _, b := range []*wire.ParsedBatch{
		Batch(t, "g1", "i1", re, "admit", "ok", 1),
		Batch(t, "g2", "i2", re, "admit", "ok", 1), // first time at g2: only the centre knows the right
		Batch(t, "g1", "i1", ticket(8), "admit", "ok", 2),
		Batch(t, "g1", "i1", ticket(8), "admit", verify.ReasonReentry, 3), // the gate knew
	} {
		res, err := s.Ingest(centre.IngestBatch{Venue: "v", Batch: b, At: at, Reentry: allows})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Conflicts) != 0 {
			t.Errorf("%s-%d: conflicts %+v; a re-entry is none", b.Instance, b.First, res.Conflicts)
		}
	}
	res, err := s.Ingest(in(Batch(t, "g3", "i3", re, "admit", "ok", 1))) // Reentry nil: no ticket allows it
	if err != nil || len(res.Conflicts) != 1 {
		t.Errorf("without the re-entry right: %+v, %v; want a conflict", res, err)
	}
}

func testRenamedGate(t *testing.T, s centre.IngestStore) {
	if _, err := s.Ingest(in(Batch(t, "old", "i1", ticket(0), "deny", "revoked", 1, 2))); err != nil {
		t.Fatal(err)
	}
	// The store renamed: the same instance's entries arrive from the new gate id.
	res, err := s.Ingest(in(Batch(t, "new", "i1", ticket(0), "deny", "revoked", 1, 2, 3)))
	if err != nil {
		t.Fatal(err)
	}
	if res.New != 1 || res.Duplicate != 2 {
		t.Errorf("renamed gate: new %d dup %d; want 1 2 (ids i1-1, i1-2 are booked)", res.New, res.Duplicate)
	}
}

func testRecords(t *testing.T, s centre.IngestStore) {
	b := Batch(t, "g1", "i1", ticket(0), "admit", "ok", 1, 2, 3, 4, 5)
	if _, err := s.Ingest(in(b)); err != nil {
		t.Fatal(err)
	}
	es, err := s.Entries(0, 2)
	if err != nil || len(es) != 2 {
		t.Fatalf("page 1: %d (%v)", len(es), err)
	}
	rest, err := s.Entries(es[1].N, 10)
	if err != nil || len(rest) != 3 {
		t.Fatalf("page 2: %d (%v)", len(rest), err)
	}
	all := append(es, rest...)
	for i, r := range all {
		if i > 0 && r.N <= all[i-1].N {
			t.Errorf("record %d: N %d after %d", i, r.N, all[i-1].N)
		}
		if r.Venue != "v" || r.Gate != "g1" || r.ID != fmt.Sprintf("i1-%d", i+1) || !r.ReceivedAt.Equal(at) || r.ClockOffsetMs != -12 {
			t.Errorf("record %d: %+v", i, r)
		}
		var got, want any
		if json.Unmarshal(r.Entry, &got) != nil || json.Unmarshal(b.Entries[i], &want) != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("record %d: entry %s; want %s", i, r.Entry, b.Entries[i])
		}
	}
	if es, err := s.Entries(all[4].N, 10); err != nil || len(es) != 0 {
		t.Errorf("past the end: %d (%v)", len(es), err)
	}
}

func testGateState(t *testing.T, s centre.IngestStore) {
	if gs, err := s.Gates(); err != nil || len(gs) != 0 {
		t.Fatalf("empty store: %+v, %v", gs, err)
	}
	if err := s.UpdateGate("v", "g1", func(g *centre.GateState) {
		if g.Venue != "v" || g.Gate != "g1" || g.Entries != 0 {
			t.Errorf("new gate's state: %+v", g)
		}
		g.Event, g.Online = "E", true
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ingest(in(Batch(t, "g1", "i1", ticket(0), "admit", "ok", 1, 2))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ingest(in(Batch(t, "g1", "i1", ticket(0), "admit", "ok", 2, 3))); err != nil {
		t.Fatal(err)
	}
	gs, err := s.Gates()
	if err != nil || len(gs) != 1 {
		t.Fatalf("gates: %+v, %v", gs, err)
	}
	g := gs[0]
	if g.Event != "E" || !g.Online || g.Entries != 3 || g.Conflicts != 2 || g.StoredTo != 3 || g.Instance != "i1" ||
		g.ClockOffsetMs != -12 || !g.LastSeen.Equal(at) {
		t.Errorf("gate state: %+v", g)
	}
}

// testRemoveGate: a removed gate leaves Gates, its entries stay, and the
// other gates are untouched.
func testRemoveGate(t *testing.T, s centre.IngestStore) {
	r, ok := s.(centre.GateRemover)
	if !ok {
		t.Skip("store cannot remove gates")
	}
	for _, g := range []string{"g1", "g2"} {
		if _, err := s.Ingest(in(Batch(t, g, "i-"+g, ticket(0), "deny", "revoked", 1))); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.RemoveGate("v", "g1"); err != nil {
		t.Fatal(err)
	}
	gs, err := s.Gates()
	if err != nil || len(gs) != 1 || gs[0].Gate != "g2" {
		t.Fatalf("gates after removing g1: %+v, %v", gs, err)
	}
	if rs, err := s.Entries(0, 10); err != nil || len(rs) != 2 {
		t.Errorf("entries after removing g1: %d, %v", len(rs), err)
	}
}

// testConcurrent sends every batch twice from different goroutines over
// several handles while a reader pages by N: every entry is stored once,
// and the reader sees each exactly once.
func testConcurrent(t *testing.T, hs []centre.IngestStore) {
	const gates, batches, per = 4, 12, 25
	var work []*wire.ParsedBatch
	for g := range gates {
		for b := range batches {
			var seqs []uint64
			for i := range per {
				seqs = append(seqs, uint64(b*per+i+1))
			}
			bt := Batch(t, fmt.Sprintf("g%d", g), fmt.Sprintf("i%d", g), ticket(b), "deny", "revoked", seqs...)
			work = append(work, bt, bt)
			// Gates a0..a3 each admit ticket 100+b: three conflicts a ticket.
			work = append(work, Batch(t, fmt.Sprintf("a%d", g), fmt.Sprintf("j%d", g), ticket(100+b), "admit", "ok", uint64(b+1)))
		}
	}
	total := gates*batches*per + gates*batches
	jobs := make(chan *wire.ParsedBatch)
	var mu sync.Mutex
	newSum, conflicts := 0, 0
	var wg sync.WaitGroup
	for w := range 8 {
		s := hs[w%len(hs)]
		wg.Go(func() {
			for b := range jobs {
				res, err := s.Ingest(in(b))
				if err != nil {
					t.Errorf("ingest %s %d-%d: %v", b.Gate, b.First, b.Last, err)
					continue
				}
				mu.Lock()
				newSum += res.New
				conflicts += len(res.Conflicts)
				mu.Unlock()
			}
		})
	}
	seen := map[string]int{}
	done := make(chan struct{})
	var rg sync.WaitGroup
	rg.Go(func() {
		var since uint64
		for {
			select {
			case <-done:
				return
			default:
			}
			es, err := hs[len(hs)-1].Entries(since, 50)
			if err != nil {
				t.Errorf("reader: %v", err)
				return
			}
			for _, e := range es {
				seen[e.ID]++
				since = e.N
			}
		}
	})
	for _, b := range work {
		jobs <- b
	}
	close(jobs)
	wg.Wait()
	close(done)
	rg.Wait()
	if newSum != total {
		t.Errorf("%d entries new; want %d", newSum, total)
	}
	es, err := hs[0].Entries(0, 100000)
	if err != nil || len(es) != total {
		t.Fatalf("%d entries stored (%v); want %d", len(es), err, total)
	}
	var since uint64
	for _, e := range es {
		if e.N <= since {
			t.Fatalf("N %d after %d", e.N, since)
		}
		since = e.N
	}
	// The reader may stop before the last commits; what it saw it saw once,
	// and paging on from where it stopped yields the rest.
	last := uint64(0)
	for _, e := range es {
		if seen[e.ID] > 0 {
			last = max(last, e.N)
		}
	}
	for _, e := range es {
		switch {
		case seen[e.ID] > 1:
			t.Errorf("reader saw %s %d times", e.ID, seen[e.ID])
		case seen[e.ID] == 0 && e.N <= last:
			t.Errorf("reader skipped %s (N %d, it read up to %d)", e.ID, e.N, last)
		}
	}
	cs, _ := hs[0].Conflicts()
	if want := (gates - 1) * batches; len(cs) != want || conflicts != want {
		t.Errorf("%d conflicts recorded, %d reported; want %d", len(cs), conflicts, want)
	}
	gs, _ := hs[0].Gates()
	for _, g := range gs {
		if g.Gate[0] == 'g' && (g.Entries != batches*per || g.StoredTo != batches*per) {
			t.Errorf("gate %s: entries %d stored_to %d; want %d", g.Gate, g.Entries, g.StoredTo, batches*per)
		}
	}
}

// testGapFilledLate: entry 1 arrives after 2..2501; stored-to then jumps
// over all of them at once.
func testGapFilledLate(t *testing.T, s centre.IngestStore) {
	for first := uint64(2); first <= 2501; first += 500 {
		var seqs []uint64
		for q := first; q < first+500; q++ {
			seqs = append(seqs, q)
		}
		res, err := s.Ingest(in(Batch(t, "g1", "i1", ticket(0), "deny", "revoked", seqs...)))
		if err != nil || res.StoredTo != 0 || res.New != 500 {
			t.Fatalf("batch from %d: %+v, %v; want 500 new, stored to 0", first, res, err)
		}
	}
	res, err := s.Ingest(in(Batch(t, "g1", "i1", ticket(0), "deny", "revoked", 1)))
	if err != nil || res.StoredTo != 2501 {
		t.Fatalf("gap filled: %+v, %v; want stored to 2501", res, err)
	}
}

// testUsesLog: every new first admission gets the next number of its
// event's log, in the batch's transaction; duplicates, conflicts, re-entries
// and denials get none; pages end at the head.
func testUsesLog(t *testing.T, s centre.IngestStore) {
	if us, head, err := s.Uses("E", 0, 10); err != nil || len(us) != 0 || head != 0 {
		t.Fatalf("empty log: %+v, head %d, %v", us, head, err)
	}
	steps := []struct {
		name string
		b    *wire.ParsedBatch
		want []uint64 // numbers logged
	}{
		{"two uses", Batch(t, "g1", "i1", ticket(1), "admit", "ok", 1), []uint64{1}},
		{"another ticket", Batch(t, "g2", "i2", ticket(2), "admit", "ok", 1), []uint64{2}},
		{"resent", Batch(t, "g1", "i1", ticket(1), "admit", "ok", 1), nil},
		{"conflict", Batch(t, "g2", "i2", ticket(1), "admit", "ok", 2), nil},
		{"denial", Batch(t, "g2", "i2", ticket(3), "deny", "revoked", 3), nil},
		{"re-entry", Batch(t, "g2", "i2", ticket(2), "admit", verify.ReasonReentry, 4), nil},
	}
	for _, st := range steps {
		res, err := s.Ingest(in(st.b))
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for i, lu := range res.Logged {
			got = append(got, lu.N)
			if lu.Event != "E" || lu.Ticket != res.Tickets[i] || lu.Gate != st.b.Gate || lu.Seq != res.Seqs[i] {
				t.Errorf("%s: logged %+v", st.name, lu)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(st.want) {
			t.Errorf("%s: logged %v; want %v", st.name, got, st.want)
		}
	}
	// A batch of 30 first admissions: contiguous numbers 3..32.
	var seqs []uint64
	for q := uint64(10); q < 40; q++ {
		seqs = append(seqs, q)
	}
	b := Batch(t, "g3", "i3", ticket(0), "admit", "ok", seqs...)
	for i := range b.Parsed { // a different ticket each
		b.Parsed[i].Ticket = ticket(200 + i).String()
	}
	res, err := s.Ingest(in(b))
	if err != nil || len(res.Logged) != 30 || res.Logged[0].N != 3 || res.Logged[29].N != 32 {
		t.Fatalf("batch of 30: %+v, %v", res.Logged, err)
	}
	var all []wire.LoggedUse
	for after := uint64(0); ; {
		page, head, err := s.Uses("E", after, 7)
		if err != nil || head != 32 {
			t.Fatalf("page after %d: head %d, %v", after, head, err)
		}
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		after = page[len(page)-1].N
	}
	for i, u := range all {
		if u.N != uint64(i+1) {
			t.Fatalf("use %d numbered %d", i, u.N)
		}
	}
	if len(all) != 32 || all[0].Ticket != ticket(1) || all[0].Gate != "g1" || all[0].EntryID != "i1-1" || !all[0].At.Equal(at.Add(-time.Second)) {
		t.Errorf("log: %d uses, first %+v", len(all), all[0])
	}
	if us, head, err := s.Uses("other", 0, 10); err != nil || len(us) != 0 || head != 0 {
		t.Errorf("another event's log: %+v, head %d, %v", us, head, err)
	}
}

// testUsesLogConcurrent: batches racing over several handles number their
// uses without a gap or a repeat.
func testUsesLogConcurrent(t *testing.T, hs []centre.IngestStore) {
	const gates, per = 4, 40
	var wg sync.WaitGroup
	for g := range gates {
		s := hs[g%len(hs)]
		wg.Go(func() {
			for q := range per {
				b := Batch(t, fmt.Sprintf("g%d", g), fmt.Sprintf("i%d", g), ticket(1000+g*per+q), "admit", "ok", uint64(q+1))
				if _, err := s.Ingest(in(b)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	us, head, err := hs[0].Uses("E", 0, 10000)
	if err != nil || head != gates*per || len(us) != gates*per {
		t.Fatalf("%d uses, head %d (%v); want %d", len(us), head, err, gates*per)
	}
	seen := map[verify.TicketID]bool{}
	for i, u := range us {
		if u.N != uint64(i+1) || seen[u.Ticket] {
			t.Fatalf("use %d: %+v (seen before: %v)", i, u, seen[u.Ticket])
		}
		seen[u.Ticket] = true
	}
}

// testUnproven: an admission the centre could not verify is booked as an
// entry and an alert, once, and never as a use, a conflict or a logged use.
func testUnproven(t *testing.T, s centre.IngestStore) {
	forged := Batch(t, "g1", "i1", ticket(5), "admit", "ok", 1, 2)
	bad := map[uint64]centre.Alert{1: {Kind: centre.AlertUnproven, Detail: "forged"}}
	for range 2 { // the second time it is a duplicate: no second alert
		res, err := s.Ingest(centre.IngestBatch{Venue: "v", Batch: forged, At: at, Unproven: bad})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Admitted) > 1 || len(res.Logged) > 1 || len(res.Conflicts) != 0 {
			t.Errorf("unproven claim: %+v", res)
		}
	}
	// Entry 2 was proven: the use is 2's, and a later proven admission at g2 conflicts with it, not with 1.
	us, _, err := s.Uses("E", 0, 10)
	if err != nil || len(us) != 1 || us[0].EntryID != "i1-2" {
		t.Errorf("uses log: %+v, %v; want only i1-2", us, err)
	}
	as, err := s.Alerts(0, 10)
	if err != nil || len(as) != 1 {
		t.Fatalf("alerts: %+v, %v; want one", as, err)
	}
	if a := as[0]; a.N == 0 || a.Venue != "v" || a.Gate != "g1" || a.Kind != centre.AlertUnproven || a.EntryID != "i1-1" ||
		a.Ticket != ticket(5).String() || a.Detail != "forged" || !a.At.Equal(at) {
		t.Errorf("alert: %+v", a)
	}
	if es, _ := s.Entries(0, 10); len(es) != 2 {
		t.Errorf("%d entries booked; want both", len(es))
	}
	if err := s.AddAlerts([]centre.Alert{{Venue: "v", Gate: "g2", Kind: centre.AlertRate, At: at}}); err != nil {
		t.Fatal(err)
	}
	if as, _ := s.Alerts(0, 10); len(as) != 2 || as[1].Kind != centre.AlertRate || as[1].N <= as[0].N {
		t.Errorf("after AddAlerts: %+v", as)
	}
	if as, err := s.Alerts(as[0].N, 10); err != nil || len(as) != 1 || as[0].Kind != centre.AlertRate {
		t.Errorf("alerts after the first: %+v, %v; want the rate alert", as, err)
	}
	if as, err := s.Alerts(0, 1); err != nil || len(as) != 1 || as[0].Kind != centre.AlertUnproven {
		t.Errorf("one alert: %+v, %v; want the first", as, err)
	}
}
