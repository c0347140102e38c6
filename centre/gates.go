package centre

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gated-dev/gated/wire"
	bolt "go.etcd.io/bbolt"
)

// Gates in the books: liveness from heartbeats, and the operator's hold on
// gate logins (lock, unlock, remove).

const (
	// StatusEvery is how often a gate publishes its status (gatelink's
	// default heartbeat).
	StatusEvery = 10 * time.Second
	// OfflineAfter is how long a gate may stay silent before the books show
	// it offline: three missed heartbeats. The will marks a gate offline at
	// once when the broker notices; this covers what no will reports (the
	// centre or the broker restarted while the gate died).
	OfflineAfter = 3 * StatusEvery
)

// ErrNoGate means there is no gate login of that venue and id.
var ErrNoGate = errors.New("no such gate")

// Live applies the heartbeat rule to a stored gate state: online only if
// the gate said so and was heard from within OfflineAfter of now.
func (g *GateState) Live(now time.Time) {
	if g.Online && (g.LastSeen.IsZero() || now.Sub(g.LastSeen) > OfflineAfter) {
		g.Online = false
	}
}

// gatesNow is Gates with online following the heartbeat.
func (c *Centre) gatesNow() ([]GateState, error) {
	gs, err := c.books().Gates()
	if err != nil {
		return nil, err
	}
	now := c.now()
	err = c.db.View(func(tx *bolt.Tx) error {
		users := tx.Bucket(bUsers)
		for i := range gs {
			gs[i].Live(now)
			var u gateUser
			v := users.Get([]byte(gs[i].Gate))
			gs[i].Locked = v != nil && json.Unmarshal(v, &u) == nil && u.Venue == gs[i].Venue && u.Locked
		}
		return nil
	})
	return gs, err
}

// GateRemover is an IngestStore that can forget a gate's state
// (gatesync remove-gate). BoltIngest and pgstore implement it.
type GateRemover interface {
	RemoveGate(venue, gate string) error
}

// RemoveGate implements GateRemover.
func (s *BoltIngest) RemoveGate(venue, gate string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bGates).Delete([]byte(venue + "/" + gate)) })
}

// OnGateLogin sets a function called after a gate's login was locked or
// removed, so the embedded broker disconnects it at once. It must not
// block for long.
func (c *Centre) OnGateLogin(fn func(venue, gate string)) { c.onGateLogin.Store(&fn) }

func (c *Centre) gateLoginChanged(venue, gate string) {
	if fn := c.onGateLogin.Load(); fn != nil {
		(*fn)(venue, gate)
	}
}

// editGateUser applies fn to the login of venue's gate in one transaction.
func (c *Centre) editGateUser(venue, gate string, fn func(b *bolt.Bucket, u *gateUser) error) error {
	return c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bUsers)
		v := b.Get([]byte(gate))
		var u gateUser
		if v == nil || json.Unmarshal(v, &u) != nil || u.Venue != venue {
			return fmt.Errorf("%w: gate %q at venue %q (add it with gatesync add-gate) / 没有这个闸机", ErrNoGate, gate, venue)
		}
		return fn(b, &u)
	})
}

// LockGate locks (or, with locked false, unlocks) a gate's broker login:
// the broker refuses a locked login, and the embedded broker disconnects
// it at once. For a gate that sent forged claims; its books stay.
func (c *Centre) LockGate(venue, gate string, locked bool) error {
	err := c.editGateUser(venue, gate, func(b *bolt.Bucket, u *gateUser) error {
		u.Locked = locked
		v, err := json.Marshal(u)
		if err != nil {
			return err
		}
		return b.Put([]byte(gate), v)
	})
	if err == nil && locked {
		c.gateLoginChanged(venue, gate)
	}
	return err
}

// RemoveGate deletes a gate's broker login and its state in the books (the
// entries it sent stay), and disconnects it from the embedded broker.
func (c *Centre) RemoveGate(venue, gate string) error {
	if !wire.ValidID(venue) || !wire.ValidID(gate) {
		return fmt.Errorf("venue %q and gate %q: use 1-64 letters, digits, '.', '_' or '-'", venue, gate)
	}
	err := c.editGateUser(venue, gate, func(b *bolt.Bucket, _ *gateUser) error { return b.Delete([]byte(gate)) })
	if err != nil {
		return err
	}
	c.gateLoginChanged(venue, gate)
	if r, ok := c.books().(GateRemover); ok {
		return r.RemoveGate(venue, gate)
	}
	return nil
}

// GateLogin reports whether venue's gate has a login that is not locked:
// the embedded broker's gates are the only ones whose messages create gate
// records (a login the broker refused never does, nor a retained status
// left by a removed gate).
func (c *Centre) GateLogin(venue, gate string) bool {
	v, ok := c.GateVenue(gate)
	return ok && v == venue
}

// Health is the centre's own health: nil, or why it is failing (the last
// ingest failed: a full disk, a commit error, the database away). /healthz
// answers 503 with it, and the dashboard shows it as a critical alert.
func (c *Centre) Health() error {
	h := c.health.Load()
	if h == nil {
		return nil
	}
	return fmt.Errorf("ingest failing since %s: %w; gates keep their entries and send them again once it is fixed / 中心写入失败",
		h.since.Format(time.RFC3339), h.err)
}

type ingestFault struct {
	since time.Time
	err   error
}

// noteIngest records the outcome of an ingest: a failure makes the centre
// unhealthy until a commit succeeds again.
func (c *Centre) noteIngest(err error) {
	old := c.health.Load()
	switch {
	case err == nil && old != nil:
		c.health.Store(nil)
	case err != nil && old == nil:
		c.health.Store(&ingestFault{c.now().UTC(), err})
	case err != nil:
		c.health.Store(&ingestFault{old.since, err})
	}
}
