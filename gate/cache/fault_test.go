package cache

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/gated-dev/gated/internal/faultfs"
	"github.com/gated-dev/gated/internal/lockedbuf"
	"github.com/gated-dev/gated/internal/testreq"
	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// mountFaults mounts a fault-injecting FUSE passthrough for the test. It
// skips where FUSE cannot be mounted (not root, no /dev/fuse), or fails
// with GATED_TEST_REQUIRE set (see internal/testreq).
func mountFaults(t testing.TB) *faultfs.FS {
	t.Helper()
	mnt := t.TempDir()
	f, err := faultfs.Mount(t.TempDir(), mnt)
	if err != nil {
		testreq.Skipf(t, "FUSE cannot be mounted (needs root and /dev/fuse): %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// scanAll decides every code from several goroutines at once, each
// goroutine taking every code, so scans share commits and second scans of
// a ticket are already_used.
func scanAll(t testing.TB, w *world, s *Store, v *verify.Verifier, codes []string, scanners int) []Decision {
	var mu sync.Mutex
	var out []Decision
	var wg sync.WaitGroup
	for g := 0; g < scanners; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, code := range codes {
				tok, err := verify.Parse([]byte(code))
				if err != nil {
					t.Error(err)
					return
				}
				e, _ := s.Record(context.Background(), v, Scan{At: w.now, Gate: "g1", Scanner: fmt.Sprint("s", g), Checked: v.Check(tok, w.now, nil)})
				mu.Lock()
				out = append(out, e)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// held is what a reopened store holds: journal records by sequence, and
// uses by ticket.
type held struct {
	journal map[uint64][]byte
	used    map[string]verify.Use
}

func readHeld(t testing.TB, dir string) held {
	t.Helper()
	s, err := Open(dir, &Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := held{journal: map[uint64][]byte{}, used: map[string]verify.Use{}}
	err = s.db.View(func(tx *bolt.Tx) error {
		tx.Bucket(bJournal).ForEach(func(k, v []byte) error {
			h.journal[binary.BigEndian.Uint64(k)] = append([]byte(nil), v...)
			return nil
		})
		return tx.Bucket(bUsed).ForEach(func(k, v []byte) error {
			var u verify.Use
			json.Unmarshal(v, &u)
			h.used[verify.TicketID(k).String()] = u
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// mismatches compares what was signalled with what the store holds and
// names every disagreement: a signalled decision that is not stored as
// signalled, a stored decision that was never signalled, and a stored use
// that no signalled ADMIT made.
func mismatches(signalled []Decision, h held) []string {
	var bad []string
	bySeq := map[uint64]Decision{}
	for _, e := range signalled {
		if e.Seq == 0 {
			if e.Verdict == Admit {
				bad = append(bad, fmt.Sprintf("ticket %s signalled ADMIT without a journal record", e.Ticket))
			}
			continue // a storage_failure DENY: nothing recorded, checked below
		}
		bySeq[e.Seq] = e
		rec, _ := json.Marshal(&e)
		if got, ok := h.journal[e.Seq]; !ok || string(got) != string(rec) {
			bad = append(bad, fmt.Sprintf("seq %d signalled %s %s for ticket %s, stored %q", e.Seq, e.Verdict, e.Reason, e.Ticket, got))
		}
		if e.Verdict == Admit {
			if u, ok := h.used[e.Ticket]; !ok || u.Seq != e.Seq {
				bad = append(bad, fmt.Sprintf("ticket %s signalled ADMIT at seq %d, stored use %+v", e.Ticket, e.Seq, u))
			}
		}
	}
	for seq, rec := range h.journal {
		if _, ok := bySeq[seq]; !ok {
			bad = append(bad, fmt.Sprintf("seq %d stored but never signalled: %s", seq, rec))
		}
	}
	for ticket, u := range h.used {
		if e, ok := bySeq[u.Seq]; !ok || e.Verdict != Admit || e.Ticket != ticket {
			bad = append(bad, fmt.Sprintf("ticket %s stored as used at seq %d, signalled %s %s", ticket, u.Seq, e.Verdict, e.Reason))
		}
	}
	sort.Strings(bad)
	return bad
}

// Every kind of disk fault, injected into the Nth write or fsync of
// concurrent scans through a real filesystem (FUSE) under bbolt: what was
// signalled equals what a reopened store holds, every time.
func TestFailedCommitNeverHalfTrue(t *testing.T) {
	ffs := mountFaults(t)
	w := newWorld(t, 6)
	bundle := w.bundle(t, 1, "expo", w.root)
	v := w.verifier()
	const points = 24
	type tally struct{ cases, fired, failedScans, durableDespite, mismatched int }
	type kind struct {
		fault   faultfs.Fault
		reserve int64
	}
	name := func(k kind) string {
		if k.reserve < 0 {
			return k.fault.String() + "/no-reserve"
		}
		return k.fault.String()
	}
	var kinds []kind
	for _, f := range faultfs.Faults {
		kinds = append(kinds, kind{f, 0})
	}
	// A full disk without the space reserve to fall back on.
	kinds = append(kinds, kind{faultfs.WriteENOSPC, -1})
	counts := map[kind]*tally{}
	for _, k := range kinds {
		c := &tally{}
		counts[k] = c
		for n := 1; n <= points; n++ {
			dir := filepath.Join(ffs.Dir, fmt.Sprintf("%s-%d", strings.ReplaceAll(name(k), "/", "-"), n))
			s, err := Open(dir, &Options{OpenFile: ffs.OpenFile, Reserve: k.reserve})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Provision(bundle); err != nil {
				t.Fatal(err)
			}
			var logged lockedbuf.Buffer
			s.log = slog.New(slog.NewTextHandler(&logged, nil))
			ffs.Arm(k.fault, n, false)
			got := scanAll(t, w, s, v, w.codes, 3)
			c.fired += ffs.Disarm()
			c.cases++
			// The store goes on after the fault: later commits must build
			// on what is on disk, not on what the failed one left in memory.
			got = append(got, scanAll(t, w, s, v, w.codes, 2)...)
			if err := s.Check(); err != nil {
				t.Errorf("%s at op %d: store damaged after the fault: %v", name(k), n, err)
			}
			for _, e := range got {
				if e.Reason == verify.ReasonStorageFailure {
					c.failedScans++
				}
			}
			if strings.Contains(logged.String(), "reached the disk") {
				c.durableDespite++
			}
			s.Close()
			for _, m := range mismatches(got, readHeld(t, dir)) {
				c.mismatched++
				t.Errorf("%s at op %d: %s", name(k), n, m)
			}
		}
	}
	for _, k := range kinds {
		c := counts[k]
		t.Logf("%-24s cases %d, faults fired %d, storage_failure scans %d, batches durable despite the error %d, mismatches %d",
			name(k), c.cases, c.fired, c.failedScans, c.durableDespite, c.mismatched)
		if c.fired == 0 {
			t.Errorf("%s: no fault fired", name(k))
		}
	}
	if counts[kind{faultfs.SyncEIO, 0}].durableDespite == 0 {
		t.Errorf("sync-eio never left a failed commit durable: the read-back path was not exercised")
	}
}

func TestMain(m *testing.M) {
	faultfs.ServeIfChild()
	os.Exit(m.Run())
}

// While the disk keeps failing the store says so (Health), every scan is
// a storage_failure that admits no one, and a probe after the disk
// recovers clears the fault.
func TestHealthFollowsTheDisk(t *testing.T) {
	ffs := mountFaults(t)
	w := newWorld(t, 3)
	s := openStore(t, filepath.Join(ffs.Dir, "d"), &Options{OpenFile: ffs.OpenFile, Reserve: -1})
	if _, err := s.Provision(w.bundle(t, 1, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	v := w.verifier()
	if h := s.Health(); !h.OK {
		t.Fatalf("fresh store: %+v", h)
	}
	ffs.Arm(faultfs.SyncEIO, 1, true)
	for _, code := range w.codes[:2] {
		tok, _ := verify.Parse([]byte(code))
		e, err := s.Record(context.Background(), v, Scan{At: w.now, Gate: "g1", Checked: v.Check(tok, w.now, nil)})
		if err == nil && e.Verdict == Admit {
			// SyncEIO keeps the data: the read-back may find it durable,
			// and then the admission stands, as stored.
			continue
		}
		if e.Reason != verify.ReasonStorageFailure {
			t.Fatalf("scan on a failing disk: %s %v", e.Reason, err)
		}
	}
	h := s.Health()
	if h.OK || h.Err == "" || h.Since.IsZero() || h.Failures == 0 {
		t.Fatalf("health while every fsync fails: %+v", h)
	}
	if err := s.Probe(); err == nil {
		t.Fatal("probe on a failing disk succeeded")
	}
	ffs.Disarm()
	if err := s.Probe(); err != nil {
		t.Fatalf("probe after the disk recovered: %v", err)
	}
	if h := s.Health(); !h.OK {
		t.Fatalf("health after the disk recovered: %+v", h)
	}
}
