package gatelink

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
)

type fixture struct {
	root, issuer ed25519.PrivateKey
	store        *cache.Store
	link         *Link
	trusted      []*verify.TrustList
}

func trustList(t testing.TB, root, issuer ed25519.PrivateKey, v uint64) *verify.Envelope {
	env, err := verify.Seal(verify.TypeTrustList, &verify.TrustList{Version: v, IssuedAt: time.Now().UTC(),
		Keys: []verify.IssuerKey{{KeyID: 1, PublicKey: issuer.Public().(ed25519.PublicKey)}}}, root)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// newFixture is a provisioned store (event E, version 5) and a link on it
// that is never connected: handle is driven directly.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{}
	_, f.root, _ = ed25519.GenerateKey(rand.Reader)
	_, f.issuer, _ = ed25519.GenerateKey(rand.Reader)
	b := verify.Bundle{Version: 5, CreatedAt: time.Now().UTC(), Event: "E", TrustList: trustList(t, f.root, f.issuer, 5),
		Tickets: []verify.TicketEntry{}, Revocations: []verify.Revocation{}}
	env, _ := verify.Seal(verify.TypeBundle, &b, f.root)
	data, _ := json.Marshal(verify.BundleFile{RootKey: f.root.Public().(ed25519.PublicKey), Bundle: env})
	var err error
	if f.store, err = cache.Open(t.TempDir(), &cache.Options{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.store.Close() })
	if _, err := f.store.Provision(data); err != nil {
		t.Fatal(err)
	}
	f.link, err = New(f.store, Options{Broker: "tcp://127.0.0.1:1", Venue: "v", Gate: "g1",
		OnTrust: func(tl *verify.TrustList) { f.trusted = append(f.trusted, tl) }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) sign(t testing.TB, typ string, v any) []byte {
	b, err := wire.Sign(typ, v, f.root)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func id(b byte) verify.TicketID {
	var i verify.TicketID
	i[0], i[11] = b, b
	return i
}

func TestHandle(t *testing.T) {
	f := newFixture(t)
	_, rogue, _ := ed25519.GenerateKey(rand.Reader)
	var snap *snapshot
	wl, sy := wire.VenueTopic("v", wire.KindWhitelist), wire.GateTopic("v", "g1", wire.KindSync)
	live := wire.VenueTopic("v", wire.KindLive)
	forged, _ := wire.Sign(wire.TypeDelta, &wire.Delta{Event: "E", Prev: 5, Version: 6, Revocations: []verify.Revocation{{ID: id(1)}}}, rogue)

	// A snapshot of three tickets at version 7, in two chunks.
	var recs [2][]byte
	for i := range 3 {
		e := verify.TicketEntry{ID: id(byte(10 + i)), Serial: 1}
		recs[i%2] = cache.AppendTicketRecord(recs[i%2], &e)
	}
	c0, c1 := wire.Chunk(42, 0, recs[0]), wire.Chunk(42, 1, recs[1])
	manifest := f.sign(t, wire.TypeManifest, &wire.Manifest{Venue: "v", Gate: "g1", ID: 42, Event: "E", Version: 7,
		TrustList: trustList(t, f.root, f.issuer, 7), Tickets: 3, Chunks: []string{wire.ChunkSum(c0), wire.ChunkSum(c1)}})
	tampered := append([]byte(nil), c1...)
	tampered[len(tampered)-1] ^= 1

	for _, tc := range []struct {
		name    string
		topic   string
		payload []byte
		refused bool
		version uint64 // store version after
	}{
		{"forged delta", wl, forged, true, 5},
		{"garbage", wl, []byte("{"), true, 5},
		{"other gate's sync", wire.GateTopic("v", "g2", wire.KindSync), manifest, true, 5},
		{"other venue", wire.VenueTopic("w", wire.KindWhitelist), forged, true, 5},
		{"delta", wl, f.sign(t, wire.TypeDelta, &wire.Delta{Event: "E", Prev: 3, Version: 6,
			Revocations: []verify.Revocation{{ID: id(1), Reason: "refund"}}, TrustList: trustList(t, f.root, f.issuer, 6)}), false, 6},
		{"replayed delta", wl, f.sign(t, wire.TypeDelta, &wire.Delta{Event: "E", Prev: 3, Version: 6}), false, 6},
		{"other event's delta", wl, f.sign(t, wire.TypeDelta, &wire.Delta{Event: "X", Prev: 0, Version: 60}), false, 6},
		{"gap", wl, f.sign(t, wire.TypeDelta, &wire.Delta{Event: "E", Prev: 9, Version: 10}), false, 6},
		{"manifest", sy, manifest, false, 6},
		{"tampered chunk", sy, tampered, true, 6},
		{"chunk 0", sy, c0, false, 6},
		{"chunk 1 completes the snapshot", sy, c1, false, 7},
		{"forged live", live, func() []byte {
			b, _ := wire.Sign(wire.TypeLive, &wire.Live{Venue: "v", Event: "E", Uses: []wire.LiveUse{{Ticket: id(10), Gate: "g2"}}}, rogue)
			return b
		}(), true, 7},
		{"live", live, f.sign(t, wire.TypeLive, &wire.Live{Venue: "v", Event: "E", Uses: []wire.LiveUse{
			{Ticket: id(11), Gate: "g2", Seq: 3}, {Ticket: id(12), Gate: "g1", Seq: 4}}}), false, 7},
	} {
		err := f.link.handle(message{tc.topic, tc.payload}, &snap)
		if (err != nil) != tc.refused {
			t.Errorf("%s: err %v, refused %v", tc.name, err, tc.refused)
		}
		if st, _ := f.store.SyncState(); st.Version != tc.version {
			t.Errorf("%s: store version %d, want %d", tc.name, st.Version, tc.version)
		}
	}
	if s := f.link.Stats(); s.Deltas != 1 || s.Snapshots != 1 || s.LiveUses != 1 || s.Resyncs != 1 {
		t.Errorf("stats %+v", s)
	}
	select {
	case r := <-f.link.hello:
		if r != "gap" {
			t.Errorf("resync reason %q", r)
		}
	default:
		t.Error("a gap asked for no resync")
	}
	if len(f.trusted) != 2 || f.trusted[1].Version != 7 {
		t.Errorf("trust lists handed to the gate: %d", len(f.trusted))
	}
	s, _ := f.store.Stats()
	if s.Tickets != 3 || s.Revocations != 0 || s.Used != 1 {
		t.Errorf("store after snapshot and live: %+v", s)
	}
}

func TestAckRouting(t *testing.T) {
	f := newFixture(t)
	var snap *snapshot
	ack := f.sign(t, wire.TypeAck, &wire.Ack{Venue: "v", Gate: "g1", Instance: f.store.Instance(), First: 1, Last: 3})
	if err := f.link.handle(message{wire.GateTopic("v", "g1", wire.KindAck), ack}, &snap); err != nil {
		t.Fatal(err)
	}
	if a := <-f.link.acks; a.Last != 3 {
		t.Fatalf("ack %+v", a)
	}
	other := f.sign(t, wire.TypeAck, &wire.Ack{Venue: "v", Gate: "g2", First: 1, Last: 3})
	if err := f.link.handle(message{wire.GateTopic("v", "g1", wire.KindAck), other}, &snap); err == nil {
		t.Fatal("another gate's ack accepted")
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{{}, {Broker: "tcp://x:1", Venue: "v/x", Gate: "g"}, {Broker: "tcp://x:1", Venue: "v", Gate: ""}} {
		if err := o.defaults(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// FuzzHandle runs the gate's whole downlink path on a real store: no
// payload on any topic may panic, and none unsigned may change the store.
func FuzzHandle(f *testing.F) {
	fx := newFixture(f)
	// Genuine, but for another event: mutations of it no longer verify.
	f.Add("gated/v1/v/whitelist", fx.sign(f, wire.TypeDelta, &wire.Delta{Event: "X", Prev: 5, Version: 6}))
	f.Add("gated/v1/v/g1/sync", wire.Chunk(1, 0, nil))
	f.Add("gated/v1/v/live", []byte(`{"type":"gated.sync.live.v1","payload":"e30=","sig":""}`))
	f.Add("gated/v1/v/g1/ack", []byte("{}"))
	// Genuine uses of another event: mutations no longer verify.
	f.Add("gated/v1/v/live", fx.sign(f, wire.TypeUses, &wire.Uses{Venue: "v", Event: "X", From: 1, To: 1, Head: 1,
		Uses: []wire.LoggedUse{{N: 1, Ticket: id(1), Gate: "g2"}}}))
	f.Add("gated/v1/v/g1/sync", fx.sign(f, wire.TypeUses, &wire.Uses{Venue: "v", Gate: "g1", Event: "X", From: 1, To: 0, Head: 0}))
	f.Fuzz(func(t *testing.T, topic string, b []byte) {
		var snap *snapshot
		before, _ := fx.store.SyncState()
		cur0, _ := fx.store.UsesCursor()
		err := fx.link.handle(message{topic, b}, &snap)
		if err := fx.store.Flush(); err != nil {
			t.Fatal(err)
		}
		after, _ := fx.store.SyncState()
		if cur, _ := fx.store.UsesCursor(); cur != cur0 {
			t.Fatalf("an unsigned message moved the uses cursor: %d -> %d", cur0, cur)
		}
		if st, _ := fx.store.Stats(); st.Used != 0 {
			t.Fatalf("an unsigned message stored %d uses", st.Used)
		}
		if after.Version != before.Version && err != nil {
			t.Fatalf("a refused message changed the store: %v", err)
		}
		select {
		case <-fx.link.acks:
		default:
		}
		if after.Version != before.Version {
			t.Fatalf("an unsigned message changed the store: %d -> %d", before.Version, after.Version)
		}
	})
}
