package gatelink

import (
	"errors"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
)

// The store and the link each refuse to go back to an older whitelist;
// these tests check each alone, since either one masks the other.

// spyStore records snapshots the link hands over, and applies none.
type spyStore struct {
	*cache.Store
	snapshots []uint64
}

func (s *spyStore) StageSnapshot(sn *cache.Snapshot) (*cache.Staging, error) {
	s.snapshots = append(s.snapshots, sn.Version)
	return nil, cache.ErrStale // the link then drops it quietly
}

// TestLinkRefusesOlderSnapshot: the link does not even start receiving a
// snapshot that is not newer than the store (the store's own check is
// out of the way here).
func TestLinkRefusesOlderSnapshot(t *testing.T) {
	f := newFixture(t)
	spy := &spyStore{Store: f.store}
	l, err := New(spy, Options{Broker: "tcp://127.0.0.1:1", Venue: "v", Gate: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	var snap *snapshot
	for _, v := range []uint64{4, 5, 6} {
		m := f.sign(t, wire.TypeManifest, &wire.Manifest{Venue: "v", Gate: "g1", ID: v, Event: "E", Version: v,
			CreatedAt: time.Now().UTC(), TrustList: trustList(t, f.root, f.issuer, v), Chunks: []string{}})
		if err := l.handle(message{wire.GateTopic("v", "g1", wire.KindSync), m}, &snap); err != nil {
			t.Fatalf("manifest %d: %v", v, err)
		}
	}
	if len(spy.snapshots) != 1 || spy.snapshots[0] != 6 {
		t.Errorf("snapshots handed to the store: %v; want only 6 (it holds 5)", spy.snapshots)
	}
}

// TestStoreRefusesOlder: the store refuses a delta or a snapshot that is
// not newer than what it holds, whoever calls it.
func TestStoreRefusesOlder(t *testing.T) {
	f := newFixture(t)
	tl := trustList(t, f.root, f.issuer, 5)
	for _, tc := range []struct {
		name  string
		apply func() error
	}{
		{"delta 3-4", func() error {
			_, err := f.store.ApplyChange(&cache.Change{Event: "E", Prev: 3, Version: 4, Tickets: []verify.TicketEntry{{ID: id(7), Serial: 1}}})
			return err
		}},
		{"delta 4-5", func() error {
			_, err := f.store.ApplyChange(&cache.Change{Event: "E", Prev: 4, Version: 5})
			return err
		}},
		{"snapshot 4", func() error {
			_, err := f.store.ApplySnapshot(&cache.Snapshot{Event: "E", Version: 4, CreatedAt: time.Now().UTC(), TrustList: tl})
			return err
		}},
		{"snapshot 5", func() error {
			_, err := f.store.ApplySnapshot(&cache.Snapshot{Event: "E", Version: 5, CreatedAt: time.Now().UTC(), TrustList: tl})
			return err
		}},
	} {
		if err := tc.apply(); !errors.Is(err, cache.ErrStale) {
			t.Errorf("%s on a store at 5: %v; want ErrStale", tc.name, err)
		}
		if st, _ := f.store.SyncState(); st.Version != 5 {
			t.Errorf("%s: store now at %d; want 5", tc.name, st.Version)
		}
	}
	if e, _ := f.store.Entry(id(7)); e != nil {
		t.Error("the older delta's ticket was stored")
	}
}
