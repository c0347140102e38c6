package gatelink

import (
	"github.com/gated-dev/gated/gate/cache"
	"path/filepath"
	"testing"
	"time"

	"github.com/gated-dev/gated/wire"
)

// TestApplyUses drives the gate's side of the uses log through handle: a
// run that continues the cursor advances it; one past a gap is stored but
// asks for the log; a catch-up page that completes the answer closes
// CaughtUp; pages for another gate or unsigned are refused.
func TestApplyUses(t *testing.T) {
	f := newFixture(t)
	at := time.Now().UTC().Truncate(time.Second)
	use := func(n uint64, b byte) wire.LoggedUse {
		return wire.LoggedUse{N: n, Ticket: id(b), Gate: "g2", At: at, Seq: n, EntryID: "x-1"}
	}
	live := func(from, to uint64, us ...wire.LoggedUse) message {
		return message{wire.VenueTopic("v", wire.KindLive), f.sign(t, wire.TypeUses, &wire.Uses{Venue: "v", Event: "E", From: from, To: to, Head: to, Uses: us})}
	}
	page := func(gate string, from, to, head uint64, more bool, us ...wire.LoggedUse) message {
		return message{wire.GateTopic("v", "g1", wire.KindSync), f.sign(t, wire.TypeUses,
			&wire.Uses{Venue: "v", Gate: gate, Event: "E", From: from, To: to, Head: head, More: more, Uses: us})}
	}
	restart := func(to uint64, us ...wire.LoggedUse) message {
		return message{wire.GateTopic("v", "g1", wire.KindSync), f.sign(t, wire.TypeUses,
			&wire.Uses{Venue: "v", Gate: "g1", Event: "E", From: 1, To: to, Head: to, Restart: true, Uses: us})}
	}
	asked := func() bool {
		select {
		case <-f.link.hello:
			return true
		default:
			return false
		}
	}
	caught := func() bool {
		select {
		case <-f.link.caughtUp:
			return true
		default:
			return false
		}
	}
	var snap *snapshot
	for _, st := range []struct {
		name         string
		m            message
		refused      bool
		cursor       uint64
		asks, caught bool
		used         []byte // tickets the store holds a use of afterwards
	}{
		{"live 1-2", live(1, 2, use(1, 1), use(2, 2)), false, 2, false, false, []byte{1, 2}},
		{"live 5 past a gap", live(5, 5, use(5, 5)), false, 2, true, false, []byte{5}},
		{"page for another gate", page("g2", 3, 4, 5, false, use(3, 3), use(4, 4)), true, 2, false, false, nil},
		{"page 3-4 of 5, more", page("g1", 3, 4, 5, true, use(3, 3), use(4, 4)), false, 4, true, false, []byte{3, 4}},
		{"page 5-5, the end", page("g1", 5, 5, 5, false, use(5, 5)), false, 5, false, true, nil},
		{"empty page at the head", page("g1", 6, 5, 5, false), false, 5, false, true, nil},
		{"live replayed", live(1, 2, use(1, 1), use(2, 2)), false, 5, false, true, nil},
		{"restart at 1: the centre's log is older", restart(1, use(1, 9)), false, 1, false, true, []byte{9}},
		{"live 2 of the older log", live(2, 2, use(2, 10)), false, 2, false, true, []byte{10}},
	} {
		err := f.link.handle(st.m, &snap)
		if (err != nil) != st.refused {
			t.Errorf("%s: err %v; refused %v", st.name, err, st.refused)
		}
		if err := f.store.Flush(); err != nil {
			t.Fatal(err)
		}
		if cur, _ := f.store.UsesCursor(); cur != st.cursor {
			t.Errorf("%s: cursor %d; want %d", st.name, cur, st.cursor)
		}
		if a := asked(); a != st.asks {
			t.Errorf("%s: asked for the log %v; want %v", st.name, a, st.asks)
		}
		if c := caught(); c != st.caught {
			t.Errorf("%s: caught up %v; want %v", st.name, c, st.caught)
		}
		for _, b := range st.used {
			if e, err := f.store.Used(id(b)); err != nil || e == nil {
				t.Errorf("%s: no use of ticket %d (%v)", st.name, b, err)
			}
		}
	}
	// Signed by someone else: refused, and nothing stored.
	f.root = f.issuer
	if err := f.link.handle(live(6, 6, use(6, 6)), &snap); err == nil {
		t.Error("uses signed by another key: accepted")
	}
	if u, _ := f.store.Used(id(6)); u != nil {
		t.Error("a use from a forged message was stored")
	}
}

// TestIdleGateAppliesUsesWithoutWaiting: a gate that is not scanning
// commits joined writes at most once per LiveDelay; the link must not wait
// for each message's commit, or a busy venue's fan-out would outrun it
// (ten messages a second at the default 100 ms). With a LiveDelay of an
// hour, waiting would block the first message for an hour.
func TestIdleGateAppliesUsesWithoutWaiting(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Dir(f.store.Path())
	f.store.Close()
	st, err := cache.Open(dir, &cache.Options{NoSync: true, LiveDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(st, Options{Broker: "tcp://127.0.0.1:1", Venue: "v", Gate: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC().Truncate(time.Second)
	const n = 30
	done := make(chan error, 1)
	go func() {
		var snap *snapshot
		for i := uint64(1); i <= n; i++ {
			m := f.sign(t, wire.TypeUses, &wire.Uses{Venue: "v", Event: "E", From: i, To: i, Head: i,
				Uses: []wire.LoggedUse{{N: i, Ticket: id(byte(i)), Gate: "g2", At: at, Seq: i, EntryID: "x-1"}}})
			if err := l.handle(message{wire.VenueTopic("v", wire.KindLive), m}, &snap); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the link waits for each uses message's commit")
	}
	// Close commits what was queued.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = cache.Open(dir, &cache.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if cur, err := st.UsesCursor(); err != nil || cur != n {
		t.Fatalf("uses cursor after close %d, %v; want %d", cur, err, n)
	}
}
