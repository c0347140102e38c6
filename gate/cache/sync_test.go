package cache_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
)

type fixture struct {
	root   ed25519.PrivateKey
	issuer ed25519.PrivateKey
	store  *cache.Store
}

func trust(t testing.TB, root, issuer ed25519.PrivateKey, version uint64) *verify.Envelope {
	env, err := verify.Seal(verify.TypeTrustList, &verify.TrustList{Version: version, IssuedAt: time.Now().UTC(),
		Keys: []verify.IssuerKey{{KeyID: 1, PublicKey: issuer.Public().(ed25519.PublicKey), NotBefore: time.Now().Add(-time.Hour)}}}, root)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	_, root, _ := ed25519.GenerateKey(rand.Reader)
	_, issuer, _ := ed25519.GenerateKey(rand.Reader)
	b := verify.Bundle{Version: 5, CreatedAt: time.Now().UTC(), Event: "ev", TrustList: trust(t, root, issuer, 5),
		Tickets: []verify.TicketEntry{}, Revocations: []verify.Revocation{}}
	env, err := verify.Seal(verify.TypeBundle, &b, root)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(verify.BundleFile{RootKey: root.Public().(ed25519.PublicKey), Bundle: env})
	s, err := cache.Open(t.TempDir(), &cache.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Provision(data); err != nil {
		t.Fatal(err)
	}
	return &fixture{root: root, issuer: issuer, store: s}
}

func (f *fixture) scan(t testing.TB, n int) {
	t.Helper()
	st, _ := f.store.State()
	v := verify.NewVerifier(verify.Policy{Event: st.Event}, st.Trust)
	for range n {
		if _, err := f.store.Record(context.Background(), v, cache.Scan{At: time.Now(), Gate: "g1",
			Pre: verify.Result{Reason: verify.ReasonMalformed}}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOutboxAcknowledge(t *testing.T) {
	f := newFixture(t)
	f.scan(t, 10)
	out, err := f.store.Outbox(0, 4)
	if err != nil || len(out) != 4 || out[0].Seq != 1 || out[3].Seq != 4 {
		t.Fatalf("Outbox(0,4) = %d records, %v", len(out), err)
	}
	var e cache.Decision
	if err := json.Unmarshal(out[2].Record, &e); err != nil || e.Seq != 3 || e.ID != f.store.Instance()+"-3" {
		t.Fatalf("record 3 = %+v, %v", e, err)
	}
	if out, _ := f.store.Outbox(8, 100); len(out) != 2 || out[0].Seq != 9 {
		t.Fatalf("Outbox(8) = %+v", out)
	}
	for _, tc := range []struct {
		first, last uint64
		deleted     int
	}{{3, 5, 3}, {3, 5, 0}, {1, 10, 7}, {11, 20, 0}} {
		n, err := f.store.Acknowledge(tc.first, tc.last)
		if err != nil || n != tc.deleted {
			t.Errorf("Acknowledge(%d,%d) = %d, %v; want %d", tc.first, tc.last, n, err, tc.deleted)
		}
	}
	st, _ := f.store.SyncState()
	if st.Outbox != 0 || st.LastSeq != 10 {
		t.Fatalf("after acks: %+v", st)
	}
	// The journal keeps everything.
	n := 0
	f.store.Journal(1, func(cache.Decision) error { n++; return nil })
	if n != 10 {
		t.Fatalf("journal has %d records", n)
	}
}

func ticket(b byte) verify.TicketEntry {
	var id verify.TicketID
	id[0] = b
	return verify.TicketEntry{ID: id, Serial: 1, Zone: "A"}
}

func TestApplyChange(t *testing.T) {
	f := newFixture(t)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	tk := ticket(1)
	for _, tc := range []struct {
		name string
		c    cache.Change
		want error
	}{
		{"stale", cache.Change{Event: "ev", Prev: 1, Version: 5}, cache.ErrStale},
		{"gap", cache.Change{Event: "ev", Prev: 6, Version: 7}, cache.ErrGap},
		{"other event", cache.Change{Event: "x", Prev: 5, Version: 6}, cache.ErrOtherEvent},
		{"forged trust list", cache.Change{Event: "ev", Prev: 5, Version: 6, TrustList: trust(t, other, other, 9)}, verify.ErrEnvelope},
		{"older trust list", cache.Change{Event: "ev", Prev: 5, Version: 6, TrustList: trust(t, f.root, f.issuer, 4)}, cache.ErrStale},
		{"ok", cache.Change{Event: "ev", Prev: 3, Version: 6, Tickets: []verify.TicketEntry{tk},
			Revocations: []verify.Revocation{{ID: ticket(2).ID, Reason: "refund"}}, TrustList: trust(t, f.root, f.issuer, 6)}, nil},
		{"replayed", cache.Change{Event: "ev", Prev: 3, Version: 6}, cache.ErrStale},
	} {
		_, err := f.store.ApplyChange(&tc.c)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	st, _ := f.store.SyncState()
	if st.Version != 6 || st.TrustVersion != 6 {
		t.Fatalf("state after change: %+v", st)
	}
	if e, _ := f.store.Entry(tk.ID); e == nil || e.Zone != "A" {
		t.Fatalf("ticket not applied: %+v", e)
	}
	if s, _ := f.store.Stats(); s.Revocations != 1 {
		t.Fatalf("revocations %d", s.Revocations)
	}
}

func TestApplySnapshotAndMarkUsed(t *testing.T) {
	f := newFixture(t)
	var chunk []byte
	for i := range 100 {
		e := ticket(byte(i))
		chunk = cache.AppendTicketRecord(chunk, &e)
	}
	r := verify.Revocation{ID: ticket(7).ID, At: time.Now().UTC()}
	chunk = cache.AppendRevocationRecord(chunk, &r)
	sn := &cache.Snapshot{Event: "ev", Version: 9, TrustList: trust(t, f.root, f.issuer, 9), Chunks: [][]byte{chunk, {}}}
	if _, err := f.store.ApplySnapshot(sn); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.ApplySnapshot(sn); !errors.Is(err, cache.ErrStale) {
		t.Fatalf("replayed snapshot: %v", err)
	}
	bad := &cache.Snapshot{Event: "ev", Version: 10, TrustList: trust(t, f.root, f.issuer, 10), Chunks: [][]byte{chunk[:len(chunk)-1]}}
	if _, err := f.store.ApplySnapshot(bad); !errors.Is(err, cache.ErrRecord) {
		t.Fatalf("truncated chunk: %v", err)
	}
	s, _ := f.store.Stats()
	if s.Tickets != 100 || s.Revocations != 1 {
		t.Fatalf("after snapshot: %+v", s)
	}
	ids := []verify.TicketID{ticket(1).ID, ticket(1).ID, ticket(2).ID}
	uses := []verify.Use{{Seq: 1, Gate: "g2"}, {Seq: 2, Gate: "g3"}, {Seq: 3, Gate: "g2"}}
	if n, err := f.store.MarkUsedBatch(ids, uses); n != 2 || err != nil {
		t.Fatalf("MarkUsedBatch = %d, %v", n, err)
	}
	if ok, _ := f.store.MarkUsed(ticket(2).ID, verify.Use{Gate: "g9"}); ok {
		t.Fatal("a second use overwrote the first")
	}
}

func FuzzEachRecord(f *testing.F) {
	e := ticket(1)
	e.DeviceKey = make([]byte, 32)
	r := verify.Revocation{ID: ticket(2).ID}
	f.Add(cache.AppendRevocationRecord(cache.AppendTicketRecord(nil, &e), &r))
	f.Add([]byte("T\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cache.EachRecord(b, func(kind byte, id verify.TicketID, v []byte) error { return nil })
	})
}
