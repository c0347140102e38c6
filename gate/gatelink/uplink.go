package gatelink

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/gated-dev/gated/wire"
)

// publishFunc publishes a message on one of this gate's topics and
// reports whether it went out; false means not connected or failed.
type publishFunc func(kind string, retain bool, b []byte) bool

// inflight is one batch sent and not yet acked.
type inflight struct {
	first, last uint64
	sentAt      time.Time
}

// uplink is the gate's side of the entries stream: the window of batches
// in flight, what an ack deletes, resending after a silence, and the
// clock-offset estimate. It owns no goroutine and is used by one at a
// time (Link.uplink's loop); it talks to the broker only through publish,
// so tests drive it with a fake clock (testing/synctest) and a fake
// publish.
type uplink struct {
	o       *Options
	store   Store
	gate    string
	inst    string
	log     *slog.Logger
	publish publishFunc
	online  func() bool // false: fill does not even read the outbox (nil: always online)
	stats   func(func(*Stats))

	window   []inflight
	sentTo   uint64 // highest seq published since the last reset
	offsetMs int64  // the latest estimate of centre clock minus gate clock
}

// reset forgets what is in flight: sending starts again from the first
// record still in the outbox (after a reconnect, an ack timeout).
func (u *uplink) reset() { u.window, u.sentTo = nil, 0 }

// fill publishes outbox records after the last one sent, a batch at a
// time, while the window has room. Records stay in the outbox: only a
// signed ack deletes them.
func (u *uplink) fill() {
	for len(u.window) < u.o.MaxInFlight && (u.online == nil || u.online()) {
		out, err := u.store.Outbox(u.sentTo, u.o.BatchSize)
		if err != nil {
			u.log.Error("read outbox", "err", err)
			return
		}
		if len(out) == 0 {
			return
		}
		b := wire.Batch{V: wire.Version, Gate: u.gate, Instance: u.inst, First: out[0].Seq, Last: out[len(out)-1].Seq,
			SentAt: u.o.Now().UTC(), ClockOffsetMs: u.offsetMs, Entries: make([]json.RawMessage, len(out))}
		for i, o := range out {
			b.Entries[i] = o.Record
		}
		msg, err := json.Marshal(&b)
		if err != nil {
			u.log.Error("encode batch", "err", err)
			return
		}
		if !u.publish(wire.KindEntries, false, msg) {
			return
		}
		u.window = append(u.window, inflight{first: b.First, last: b.Last, sentAt: u.o.Now()})
		u.sentTo = b.Last
		u.stats(func(s *Stats) { s.Sent += len(out) })
	}
}

// ping publishes an empty batch: its ack carries a clock sample.
func (u *uplink) ping() {
	b, _ := json.Marshal(wire.Batch{V: wire.Version, Gate: u.gate, Instance: u.inst, SentAt: u.o.Now().UTC(),
		ClockOffsetMs: u.offsetMs, Entries: []json.RawMessage{}})
	u.publish(wire.KindEntries, false, b)
}

// ack handles a signed ack: a clock sample, and, when it acks exactly a
// batch in flight of this store instance, the deletion of that batch's
// records and room for more. An ack of anything else deletes nothing: a
// stale ack's records are sent again and acked again.
func (u *uplink) ack(a *wire.Ack) {
	if a.Instance != u.inst {
		return // for an earlier store of this gate: nothing of ours
	}
	// A stale ack says nothing of the clock, and neither does one sent
	// "after" now: the wall clock was set back between the batch and its
	// ack, and the round trip it would measure straddles that step.
	if now := u.o.Now(); !a.SentAt.IsZero() && !a.SentAt.After(now) && now.Sub(a.SentAt) < time.Minute {
		// NTP's estimate: the centre's time spent storing the batch is
		// taken out of the round trip.
		recv := a.ReceivedAt
		if recv.IsZero() {
			recv = a.CentreAt
		}
		u.offsetMs = ((recv.Sub(a.SentAt) + a.CentreAt.Sub(now)) / 2).Milliseconds()
	}
	if a.First == 0 {
		return
	}
	i := 0
	for i < len(u.window) && (u.window[i].first != a.First || u.window[i].last != a.Last) {
		i++
	}
	if i == len(u.window) {
		u.log.Debug("ack of no batch in flight: ignored", "first", a.First, "last", a.Last)
		return
	}
	n, err := u.store.Acknowledge(a.First, a.Last)
	if err != nil {
		u.log.Error("delete acked outbox records", "err", err, "first", a.First, "last", a.Last)
		return
	}
	u.stats(func(s *Stats) { s.Acked += n })
	u.window = append(u.window[:i], u.window[i+1:]...)
	u.fill()
}

// tick sends again from the first unacked record when the oldest batch
// in flight waited longer than AckTimeout, then fills the window.
func (u *uplink) tick() {
	if len(u.window) > 0 && u.o.Now().Sub(u.window[0].sentAt) > u.o.AckTimeout {
		u.log.Warn("no ack from the centre: sending again from the first unacked entry",
			"first", u.window[0].first, "waited", u.o.AckTimeout)
		u.stats(func(s *Stats) { s.AckTimeouts++ })
		u.reset()
	}
	u.fill()
}

// uplink owns the in-flight window; only it publishes entries.
func (l *Link) uplink(ctx context.Context) {
	var (
		lastHello time.Time
		pending   string // a hello waiting for its rate limit
	)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	beat := time.NewTicker(l.o.Heartbeat)
	defer beat.Stop()
	publish := func(kind string, retain bool, b []byte) bool {
		if !l.connected.Load() {
			return false
		}
		t := l.client.Publish(l.topic(kind), 1, retain, b)
		if t.WaitTimeout(0); t.Error() != nil {
			l.log.Warn("publish failed", "topic", kind, "err", t.Error())
			return false
		}
		return true
	}
	up := &uplink{o: &l.o, store: l.store, gate: l.o.Gate, inst: l.inst, log: l.log, publish: publish,
		online: l.connected.Load, stats: l.count}
	sendHello := func(reason string) {
		st, err := l.store.SyncState()
		if err != nil {
			l.log.Error("read store", "err", err)
			return
		}
		cur, err := l.store.UsesCursor()
		if err != nil {
			l.log.Error("read store", "err", err)
			return
		}
		b, _ := json.Marshal(wire.Hello{V: wire.Version, Gate: l.o.Gate, Instance: l.inst, Event: l.event,
			Version: st.Version, Reason: reason, Uses: &cur})
		if publish(wire.KindHello, false, b) {
			lastHello, pending = l.o.Now(), ""
			l.log.Debug("hello sent", "reason", reason, "version", st.Version, "uses", cur)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-l.conn:
			up.reset()
			if c {
				publish(wire.KindStatus, true, l.status(true))
				sendHello("connect")
				up.ping()
				up.fill()
			}
		case <-l.nudge:
			up.fill()
		case a := <-l.acks:
			up.ack(a)
			l.offsetMs.Store(up.offsetMs)
		case reason := <-l.hello:
			if pending == "" || reason == "gap" {
				pending = reason
			}
		case <-tick.C:
			if pending != "" && l.o.Now().Sub(lastHello) > time.Second {
				sendHello(pending)
			}
			up.tick()
		case <-beat.C:
			publish(wire.KindStatus, true, l.status(true))
			if len(up.window) == 0 {
				up.ping()
			}
		}
	}
}
