package cache

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// scanReq builds a scan request as Record would queue it.
func scanReq(t testing.TB, w *world, v *verify.Verifier, code string) *request {
	tok, err := verify.Parse([]byte(code))
	if err != nil {
		t.Fatal(err)
	}
	return &request{v: v, scan: Scan{At: w.now, Gate: "g1", Scanner: "test", Checked: v.Check(tok, w.now, nil)},
		done: make(chan struct{})}
}

// txID is the id of the store's last committed transaction.
func txID(t testing.TB, s *Store) int {
	var id int
	if err := s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		t.Fatal(err)
	}
	return id
}

// Two scans of one ticket in one commit batch: the first is admitted, the
// second sees its use inside the same transaction and is already_used.
func TestTwoScansOfOneTicketShareABatch(t *testing.T) {
	w := newWorld(t, 1)
	s := openStore(t, t.TempDir(), nil)
	if _, err := s.Provision(w.bundle(t, 1, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	v := w.verifier()
	before := txID(t, s)
	a, b := scanReq(t, w, v, w.codes[0]), scanReq(t, w, v, w.codes[0])
	s.commit([]*request{a, b}, false)
	if got := txID(t, s) - before; got != 1 {
		t.Fatalf("batch took %d transactions, want 1", got)
	}
	if a.err != nil || a.entry.Verdict != Admit {
		t.Fatalf("first scan: %+v %v", a.entry, a.err)
	}
	if b.err != nil || b.entry.Reason != verify.ReasonAlreadyUsed || b.entry.FirstUsedGate != "g1" || b.entry.Seq != a.entry.Seq+1 {
		t.Fatalf("second scan: %+v %v", b.entry, b.err)
	}
}

// A decision's journal record, outbox record and ticket use are one
// transaction: one scan advances the store by exactly one transaction, and
// all three are in it.
func TestUseIsInTheJournalsTransaction(t *testing.T) {
	w := newWorld(t, 1)
	s := openStore(t, t.TempDir(), nil)
	if _, err := s.Provision(w.bundle(t, 1, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	before := txID(t, s)
	e := w.scan(t, s, w.verifier(), w.codes[0])
	if got := txID(t, s) - before; got != 1 {
		t.Fatalf("one admission took %d transactions, want 1 (journal, outbox and use together)", got)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		key := binary.BigEndian.AppendUint64(nil, e.Seq)
		if tx.Bucket(bJournal).Get(key) == nil || tx.Bucket(bOutbox).Get(key) == nil || tx.Bucket(bUsed).Get(w.tickets[0].ID[:]) == nil {
			t.Errorf("after the admission: journal, outbox and use must all be stored")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// One request that fails in the transaction (here a joined write) is taken
// out of its batch; its batch-mates commit, and it gets its own error.
func TestOneFailingRequestSparesItsBatch(t *testing.T) {
	w := newWorld(t, 2)
	s := openStore(t, t.TempDir(), nil)
	if _, err := s.Provision(w.bundle(t, 1, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	v := w.verifier()
	bad := errors.New("bad request")
	runs := 0
	a, b := scanReq(t, w, v, w.codes[0]), scanReq(t, w, v, w.codes[1])
	f := &request{fn: func(*bolt.Tx) error { runs++; return bad }, done: make(chan struct{})}
	s.commit([]*request{a, f, b}, false)
	if a.err != nil || a.entry.Verdict != Admit || b.err != nil || b.entry.Verdict != Admit {
		t.Fatalf("batch-mates of a failing request: %+v %v / %+v %v", a.entry, a.err, b.entry, b.err)
	}
	if !errors.Is(f.err, bad) || runs != 2 {
		t.Fatalf("failing request: err %v after %d runs, want its own error after a run in the batch and one alone", f.err, runs)
	}
}

// The newest rotating-code time is remembered on every scan whose device
// signature verified, whatever the verdict: after a denied newer code, an
// older one is stale.
func TestRotatingCodeTimeRecordedOnDeny(t *testing.T) {
	w := newWorld(t, 0)
	device := ed25519.NewKeyFromSeed([]byte(strings.Repeat("d", 32)))
	c := verify.Credential{KeyID: 1, Ticket: verify.TicketID{0xd0}, Event: verify.TagOf(w.event), Serial: 1,
		Flags: verify.FlagDeviceKey, DeviceKey: device.Public().(ed25519.PublicKey), NotAfter: w.now.Add(time.Hour)}
	cred, err := c.Sign(w.issuer)
	if err != nil {
		t.Fatal(err)
	}
	w.tickets = append(w.tickets, verify.TicketEntry{ID: c.Ticket, Serial: 1, NotAfter: c.NotAfter, Flags: c.Flags, DeviceKey: c.DeviceKey})
	s := openStore(t, t.TempDir(), nil)
	if _, err := s.Provision(w.bundle(t, 1, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	v := w.verifier()
	code := func(ago time.Duration) string {
		q, err := verify.RotatingCode(cred, device, w.now.Add(-ago), false)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	last := func() time.Time {
		var f verify.Facts
		s.db.View(func(tx *bolt.Tx) error { f, err = facts(tx, c.Ticket); return err })
		return f.LastCode
	}
	if e := w.scan(t, s, v, code(20*time.Second)); e.Verdict != Admit {
		t.Fatalf("first code: %s %s", e.Reason, e.Detail)
	}
	if e := w.scan(t, s, v, code(10*time.Second)); e.Reason != verify.ReasonAlreadyUsed {
		t.Fatalf("second code: %s %s", e.Reason, e.Detail)
	}
	if got, want := last(), w.now.Add(-10*time.Second); !got.Equal(want) {
		t.Fatalf("newest code time after a denied scan = %s, want %s", got, want)
	}
}

// Scans are fsynced: a commit reaches the disk before Record returns. The
// faultfs layer counts the fdatasyncs bbolt makes; bbolt's NoSync would
// make none.
func TestRecordSyncs(t *testing.T) {
	ffs := mountFaults(t)
	w := newWorld(t, 1)
	s := openStore(t, filepath.Join(ffs.Dir, "d"), &Options{OpenFile: ffs.OpenFile})
	if _, err := s.Provision(w.bundle(t, 1, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	before := ffs.Syncs()
	w.scan(t, s, w.verifier(), w.codes[0])
	if got := ffs.Syncs() - before; got < 1 {
		t.Fatalf("a decision made %d fdatasyncs: it is not durable when signalled", got)
	}
}

// Other gates' admissions ride the group commit: many arriving at once
// share a commit instead of one fsync each, and one arriving while a scan
// is decided rides that scan's commit without waiting.
func TestLiveUsesRideTheGroupCommit(t *testing.T) {
	ffs := mountFaults(t)
	w := newWorld(t, 2)
	s := openStore(t, filepath.Join(ffs.Dir, "d"), &Options{OpenFile: ffs.OpenFile, LiveDelay: time.Hour})
	if _, err := s.Provision(w.bundle(t, 1, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	v := w.verifier()
	w.scan(t, s, v, w.codes[0]) // a commit just happened: live uses alone now wait for LiveDelay

	const live = 40
	before, tx0 := ffs.Syncs(), txID(t, s)
	var wg sync.WaitGroup
	var errs [live]error
	for i := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.MarkUsed(verify.TicketID{0xee, byte(i)}, verify.Use{Seq: uint64(i + 1), At: w.now, Gate: "g2"})
		}()
	}
	// No scan: the live uses wait (an hour here). Then a scan arrives and
	// takes them all into its commit.
	time.Sleep(100 * time.Millisecond)
	if got := txID(t, s); got != tx0 {
		t.Fatalf("live uses alone committed %d transactions within their LiveDelay", got-tx0)
	}
	if e := w.scan(t, s, v, w.codes[1]); e.Verdict != Admit {
		t.Fatalf("scan: %s %s", e.Reason, e.Detail)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("live use %d: %v", i, err)
		}
	}
	txs, syncs := txID(t, s)-tx0, ffs.Syncs()-before
	t.Logf("%d live uses and one scan: %d transactions, %d fdatasyncs", live, txs, syncs)
	if txs != 1 {
		t.Fatalf("%d live uses and one scan took %d transactions, want 1", live, txs)
	}
	st, _ := s.Stats()
	if st.Used != live+2 {
		t.Fatalf("%d uses stored, want %d", st.Used, live+2)
	}
}

// MarkUsed from a closed store fails at once rather than waiting.
func TestJoinAfterClose(t *testing.T) {
	s, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := s.MarkUsed(verify.TicketID{1}, verify.Use{}); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("MarkUsed after Close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("MarkUsed after Close hangs")
	}
}

// The sync link applies live messages one at a time. Each MarkUsedQueued
// returns without waiting for the disk, so 50 in a row share a commit or
// two instead of one per LiveDelay each; and a scan decided after one
// returns sees its use.
func TestSequentialLiveUsesShareCommits(t *testing.T) {
	w := newWorld(t, 1)
	s := openStore(t, t.TempDir(), &Options{LiveDelay: 200 * time.Millisecond})
	if _, err := s.Provision(w.bundle(t, 1, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	v := w.verifier()
	tok, _ := verify.Parse([]byte(w.codes[0]))
	tx0 := txID(t, s)
	start := time.Now()
	for i := range 50 {
		id := verify.TicketID{0xee, byte(i)}
		if i == 49 {
			id = tok.Credential.Ticket // the last one is used elsewhere, then scanned here
		}
		if n, err := s.MarkUsedQueued([]verify.TicketID{id}, []verify.Use{{Seq: uint64(i + 1), At: w.now, Gate: "g2"}}); n != 1 || err != nil {
			t.Fatalf("live use %d: %d, %v", i, n, err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("50 live uses applied one at a time took %s: each waited for its commit", d)
	}
	if e := w.scan(t, s, v, w.codes[0]); e.Reason != verify.ReasonAlreadyUsed || e.FirstUsedGate != "g2" {
		t.Fatalf("scan after its live use: %s %s", e.Reason, e.Detail)
	}
	if txs := txID(t, s) - tx0; txs > 3 {
		t.Fatalf("50 live uses and a scan took %d commits", txs)
	}
	st, _ := s.Stats()
	if st.Used != 50 {
		t.Fatalf("%d uses stored, want 50", st.Used)
	}
}
