package gatelink

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/wire"
)

// memOutbox is an outbox in memory: the part of Store the uplink uses.
type memOutbox struct {
	Store // nil: the uplink calls nothing else
	recs  map[uint64]bool
}

func newOutbox(n int) *memOutbox {
	m := &memOutbox{recs: map[uint64]bool{}}
	for s := uint64(1); s <= uint64(n); s++ {
		m.recs[s] = true
	}
	return m
}

func (m *memOutbox) Outbox(after uint64, max int) ([]cache.Outgoing, error) {
	var seqs []uint64
	for s := range m.recs {
		if s > after {
			seqs = append(seqs, s)
		}
	}
	slices.Sort(seqs)
	var out []cache.Outgoing
	for _, s := range seqs[:min(max, len(seqs))] {
		out = append(out, cache.Outgoing{Seq: s, Record: fmt.Appendf(nil, `{"seq":%d}`, s)})
	}
	return out, nil
}

func (m *memOutbox) Acknowledge(first, last uint64) (int, error) {
	n := 0
	for s := first; s <= last; s++ {
		if m.recs[s] {
			delete(m.recs, s)
			n++
		}
	}
	return n, nil
}

// sent is what the fake publish saw: the ranges of entry batches.
type sent struct{ batches [][2]uint64 }

func (s *sent) publish(kind string, _ bool, b []byte) bool {
	if kind != wire.KindEntries {
		return true
	}
	var bt wire.Batch
	if err := json.Unmarshal(b, &bt); err != nil {
		panic(err)
	}
	s.batches = append(s.batches, [2]uint64{bt.First, bt.Last})
	return true
}

func newUplink(out *memOutbox, p *sent) *uplink {
	o := &Options{Broker: "tcp://x:1", Venue: "v", Gate: "g1", BatchSize: 2, MaxInFlight: 3, AckTimeout: 15 * time.Second}
	o.defaults()
	return &uplink{o: o, store: out, gate: "g1", inst: "i1", log: slog.New(slog.DiscardHandler), publish: p.publish,
		stats: func(func(*Stats)) {}}
}

func (u *uplink) ackOf(first, last uint64) *wire.Ack {
	now := u.o.Now().UTC()
	return &wire.Ack{Venue: "v", Gate: "g1", Instance: u.inst, First: first, Last: last, SentAt: now, ReceivedAt: now, CentreAt: now}
}

// TestUplinkWindow: at most MaxInFlight batches are sent; records leave
// the outbox only on the ack of exactly a batch in flight of this store
// instance; each ack makes room for the next batch.
func TestUplinkWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out, p := newOutbox(10), &sent{}
		u := newUplink(out, p)
		u.fill()
		if fmt.Sprint(p.batches) != "[[1 2] [3 4] [5 6]]" {
			t.Fatalf("first fill sent %v; want three batches of two", p.batches)
		}
		if len(out.recs) != 10 {
			t.Fatalf("%d records left after sending; sending deletes nothing", len(out.recs))
		}
		for _, tc := range []struct {
			name string
			ack  *wire.Ack
			left int
		}{
			{"another instance's ack", func() *wire.Ack { a := u.ackOf(1, 2); a.Instance = "i0"; return a }(), 10},
			{"an ack beyond the batch", u.ackOf(1, 8), 10},
			{"an ack inside the batch", u.ackOf(1, 1), 10},
			{"an ack of nothing sent", u.ackOf(7, 8), 10},
			{"the ack of 3-4", u.ackOf(3, 4), 8},
			{"the same ack again", u.ackOf(3, 4), 8},
		} {
			u.ack(tc.ack)
			if len(out.recs) != tc.left {
				t.Errorf("%s: %d records left; want %d", tc.name, len(out.recs), tc.left)
			}
		}
		if fmt.Sprint(p.batches) != "[[1 2] [3 4] [5 6] [7 8]]" {
			t.Errorf("after one ack: sent %v; want 7-8 next", p.batches)
		}
		if out.recs[3] || out.recs[4] || !out.recs[1] {
			t.Errorf("outbox %v; want 3 and 4 gone, 1 kept", out.recs)
		}
	})
}

// TestUplinkResend: with no ack for AckTimeout, sending starts again from
// the first record still in the outbox; not a moment before.
func TestUplinkResend(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out, p := newOutbox(4), &sent{}
		u := newUplink(out, p)
		u.fill()
		u.ack(u.ackOf(1, 2))
		time.Sleep(u.o.AckTimeout)
		u.tick()
		if fmt.Sprint(p.batches) != "[[1 2] [3 4]]" {
			t.Fatalf("at the timeout: sent %v; want nothing more yet", p.batches)
		}
		time.Sleep(time.Second)
		u.tick()
		if fmt.Sprint(p.batches) != "[[1 2] [3 4] [3 4]]" {
			t.Fatalf("after the timeout: sent %v; want 3-4 again", p.batches)
		}
		u.ack(u.ackOf(3, 4))
		if len(out.recs) != 0 {
			t.Errorf("%d records left after every ack", len(out.recs))
		}
	})
}

// TestUplinkClockOffset: NTP's estimate, with the centre's time storing
// the batch taken out; a stale ack gives no sample.
func TestUplinkClockOffset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		u := newUplink(newOutbox(0), &sent{})
		sentAt := time.Now()
		time.Sleep(100 * time.Millisecond) // 100 ms round trip, 40 of them storing
		now := time.Now()
		// The centre's clock is 5 s ahead: it received at sentAt+5s+30ms and acked at +70ms.
		a := &wire.Ack{Instance: "i1", SentAt: sentAt, ReceivedAt: sentAt.Add(5030 * time.Millisecond), CentreAt: sentAt.Add(5070 * time.Millisecond)}
		u.ack(a)
		if u.offsetMs != 5000 {
			t.Errorf("offset %d ms; want 5000 (now %s)", u.offsetMs, now.Sub(sentAt))
		}
		time.Sleep(2 * time.Minute)
		a.CentreAt = time.Now().Add(time.Hour)
		u.ack(a)
		if u.offsetMs != 5000 {
			t.Errorf("a stale ack moved the offset to %d ms", u.offsetMs)
		}
		// The gate's clock was set back 4 h between the batch and its ack:
		// the batch seems sent in the future, and its round trip is no sample.
		future := time.Now().Add(4 * time.Hour)
		u.ack(&wire.Ack{Instance: "i1", SentAt: future, ReceivedAt: future.Add(time.Second), CentreAt: future.Add(time.Second)})
		if u.offsetMs != 5000 {
			t.Errorf("an ack of a batch sent after now moved the offset to %d ms", u.offsetMs)
		}
	})
}
