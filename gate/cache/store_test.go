package cache

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// world is a centre in miniature: a root, an issuer and some tickets.
type world struct {
	root, issuer ed25519.PrivateKey
	event        string
	now          time.Time
	tickets      []verify.TicketEntry
	codes        []string
	revoked      []verify.Revocation
}

func newWorld(t testing.TB, n int) *world {
	w := &world{
		root:   ed25519.NewKeyFromSeed([]byte(strings.Repeat("r", 32))),
		issuer: ed25519.NewKeyFromSeed([]byte(strings.Repeat("i", 32))),
		event:  "expo",
		now:    time.Date(2026, 12, 31, 20, 0, 0, 0, time.UTC),
	}
	for i := 0; i < n; i++ {
		c := verify.Credential{KeyID: 1, Ticket: verify.TicketID{byte(i >> 16), byte(i >> 8), byte(i), 0xaa},
			Event: verify.TagOf(w.event), Serial: 1, NotAfter: w.now.Add(time.Hour)}
		b, err := c.Sign(w.issuer)
		if err != nil {
			t.Fatal(err)
		}
		w.codes = append(w.codes, verify.StaticCode(b))
		w.tickets = append(w.tickets, verify.TicketEntry{ID: c.Ticket, Serial: 1, NotAfter: c.NotAfter})
	}
	return w
}

func (w *world) trust() *verify.TrustList {
	return &verify.TrustList{Version: 1, Keys: []verify.IssuerKey{{KeyID: 1, PublicKey: w.issuer.Public().(ed25519.PublicKey)}}}
}

func (w *world) bundle(t testing.TB, version uint64, event string, root ed25519.PrivateKey) []byte {
	tl, err := verify.Seal(verify.TypeTrustList, w.trust(), root)
	if err != nil {
		t.Fatal(err)
	}
	env, err := verify.Seal(verify.TypeBundle, &verify.Bundle{Version: version, CreatedAt: w.now, Event: event,
		TrustList: tl, Tickets: w.tickets, Revocations: w.revoked}, root)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(verify.BundleFile{RootKey: root.Public().(ed25519.PublicKey), Bundle: env})
	return b
}

func openStore(t testing.TB, dir string, o *Options) *Store {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (w *world) verifier() *verify.Verifier {
	return verify.NewVerifier(verify.Policy{Event: w.event}, w.trust())
}

func (w *world) scan(t testing.TB, s *Store, v *verify.Verifier, code string) Decision {
	sc := Scan{At: w.now, Gate: "g1", Scanner: "test"}
	tok, err := verify.Parse([]byte(code))
	if err != nil {
		sc.Pre = verify.Result{Reason: verify.ReasonMalformed}
	} else {
		sc.Checked = v.Check(tok, w.now, nil)
	}
	e, err := s.Record(context.Background(), v, sc)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestProvisionRules(t *testing.T) {
	w := newWorld(t, 3)
	s := openStore(t, t.TempDir(), nil)
	if _, err := s.State(); !errors.Is(err, ErrNotProvisioned) {
		t.Fatalf("fresh store: %v", err)
	}
	r, err := s.Provision(w.bundle(t, 5, "expo", w.root))
	if err != nil || !r.FirstRoot || r.Tickets != 3 {
		t.Fatalf("first bundle: %+v %v", r, err)
	}
	other := ed25519.NewKeyFromSeed([]byte(strings.Repeat("o", 32)))
	for _, tc := range []struct {
		name   string
		bundle []byte
		want   error
	}{
		{"other root", w.bundle(t, 6, "expo", other), verify.ErrOtherRoot},
		{"older", w.bundle(t, 4, "expo", w.root), ErrOlderBundle},
		{"other event", w.bundle(t, 7, "gala", w.root), ErrOtherEvent},
		{"tampered", []byte(strings.Replace(string(w.bundle(t, 8, "expo", w.root)), `"sig":"`, `"sig":"AAAA`, 1)), verify.ErrEnvelope},
		{"not json", []byte("PK\x03\x04"), nil},
	} {
		_, err := s.Provision(tc.bundle)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A refused bundle changed nothing.
	st, err := s.State()
	if err != nil || st.BundleVersion != 5 || st.Event != "expo" {
		t.Fatalf("state after refusals: %+v %v", st, err)
	}
	// Equal or newer versions load; revocations replace.
	w.revoked = []verify.Revocation{{ID: w.tickets[0].ID, At: w.now}}
	if _, err := s.Provision(w.bundle(t, 5, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	v := w.verifier()
	if e := w.scan(t, s, v, w.codes[0]); e.Reason != verify.ReasonRevoked {
		t.Fatalf("revoked ticket: %s", e.Reason)
	}
}

// Concurrent scans of one ticket share commits; exactly one is admitted
// and every decision is journalled with its own sequence number.
func TestGroupCommitSingleUse(t *testing.T) {
	w := newWorld(t, 20)
	s := openStore(t, t.TempDir(), nil)
	if _, err := s.Provision(w.bundle(t, 1, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	v := w.verifier()
	const scanners = 8
	var mu sync.Mutex
	admits := map[string]int{}
	seqs := map[uint64]bool{}
	var wg sync.WaitGroup
	for g := 0; g < scanners; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, code := range w.codes {
				e := w.scan(t, s, v, code)
				mu.Lock()
				if e.Verdict == Admit {
					admits[e.Ticket]++
				} else if e.Reason != verify.ReasonAlreadyUsed || e.FirstUsedGate != "g1" {
					t.Errorf("second scan: %s %s", e.Reason, e.Detail)
				}
				if seqs[e.Seq] {
					t.Errorf("sequence %d twice", e.Seq)
				}
				seqs[e.Seq] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(admits) != len(w.codes) {
		t.Fatalf("%d tickets admitted, want %d", len(admits), len(w.codes))
	}
	for id, n := range admits {
		if n != 1 {
			t.Errorf("ticket %s admitted %d times", id, n)
		}
	}
	var journal []Decision
	if err := s.Journal(0, func(e Decision) error { journal = append(journal, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(journal) != scanners*len(w.codes) {
		t.Fatalf("journal has %d records, want %d", len(journal), scanners*len(w.codes))
	}
	st, _ := s.Stats()
	if st.Outbox != len(journal) || st.Used != len(w.codes) {
		t.Fatalf("stats %+v", st)
	}
}

// TestRecordNeedsCheck: a scan that carries a parsed token but no Checked
// and no final result is never decided: Record journals it as malformed.
func TestRecordNeedsCheck(t *testing.T) {
	w := newWorld(t, 1)
	s := openStore(t, t.TempDir(), nil)
	if _, err := s.Provision(w.bundle(t, 1, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	tok, err := verify.Parse([]byte(w.codes[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, pre := range []verify.Result{{}, verify.Passed} {
		e, err := s.Record(context.Background(), w.verifier(), Scan{At: w.now, Gate: "g1", Token: tok, Pre: pre})
		if err != nil || e.Verdict != Deny || e.Reason != verify.ReasonMalformed || e.Ticket != tok.Credential.Ticket.String() {
			t.Fatalf("unchecked scan with result %q: %+v %v", pre.Reason, e, err)
		}
	}
}

func TestSchemaMismatch(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, nil)
	s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bMeta).Put(kSchema, []byte("99")) })
	s.Close()
	_, err := Open(dir, nil)
	if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), "99") {
		t.Fatalf("open with schema 99: %v", err)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir, nil)
	if _, err := Open(dir, &Options{Timeout: 50 * time.Millisecond}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
}

func TestRecordAfterClose(t *testing.T) {
	w := newWorld(t, 1)
	s, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	sc := Scan{At: w.now, Gate: "g1"}
	e, err := s.Record(context.Background(), w.verifier(), sc)
	if !errors.Is(err, ErrClosed) || e.Reason != verify.ReasonStorageFailure || e.Verdict != Deny {
		t.Fatalf("record after close: %+v %v", e, err)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(encodeEntry(&verify.TicketEntry{Serial: 3, Zone: "VIP", Holder: "Z*S", DeviceKey: make([]byte, 32)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(verify.TicketID{}, b)
		if err == nil {
			if again, err := decodeEntry(e.ID, encodeEntry(e)); err != nil || again.Serial != e.Serial || again.Zone != e.Zone {
				t.Fatalf("round trip: %+v %v", again, err)
			}
		}
	})
}
