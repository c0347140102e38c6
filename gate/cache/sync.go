package cache

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// What sync (gate/gatelink) reads and writes in the store. Every change
// that arrives from the centre is applied in one transaction with its
// version check, so a power cut leaves the old state or the new one.

// Errors of the sync functions that callers branch on.
var (
	// ErrGap means a delta's base is newer than the store's version: a
	// change was missed and the gate must ask for a resync.
	ErrGap = errors.New("whitelist delta skips a version")
	// ErrStale means the change is not newer than what the store holds.
	ErrStale = errors.New("whitelist change is not newer than the store")
)

// Instance is the store's random id; journal ids are Instance-Seq.
func (s *Store) Instance() string { return s.instance }

// Outgoing is one outbox record: a journal record not yet acked.
type Outgoing struct {
	Seq    uint64
	Record []byte // the journal record's JSON, copied out of the transaction
}

// Outbox returns up to max outbox records with sequence numbers above
// after, in order.
func (s *Store) Outbox(after uint64, max int) ([]Outgoing, error) {
	var out []Outgoing
	err := s.db.View(func(tx *bolt.Tx) error {
		j := tx.Bucket(bJournal)
		c := tx.Bucket(bOutbox).Cursor()
		for k, _ := c.Seek(binary.BigEndian.AppendUint64(nil, after+1)); k != nil && len(out) < max; k, _ = c.Next() {
			if len(k) != 8 {
				continue
			}
			v := j.Get(k)
			if v == nil {
				// Cannot happen (both are written in one tx); skip rather
				// than stall the uplink forever.
				s.log.Error("outbox record without a journal record", "seq", binary.BigEndian.Uint64(k))
				continue
			}
			out = append(out, Outgoing{Seq: binary.BigEndian.Uint64(k), Record: bytes.Clone(v)})
		}
		return nil
	})
	return out, err
}

// Acknowledge deletes outbox records first..last: the centre has them.
// It returns how many were still there.
func (s *Store) Acknowledge(first, last uint64) (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bOutbox)
		var keys [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(binary.BigEndian.AppendUint64(nil, first)); len(k) == 8 && binary.BigEndian.Uint64(k) <= last; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		// Deleting under a moving cursor skips keys in bbolt; delete after.
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(keys)
		return nil
	})
	return n, err
}

// SyncState is what the uplink and downlink need to know of the store.
type SyncState struct {
	Instance     string
	Event        string
	Version      uint64 // whitelist version: the bundle's, then the last delta or snapshot applied
	TrustVersion uint64
	Outbox       int
	LastSeq      uint64
	Root         ed25519.PublicKey
}

// SyncState reads it.
func (s *Store) SyncState() (SyncState, error) {
	st, err := s.State()
	if err != nil {
		return SyncState{}, err
	}
	ss := SyncState{Instance: s.instance, Event: st.Event, Version: st.BundleVersion, Root: st.Root}
	if st.Trust != nil {
		ss.TrustVersion = st.Trust.Version
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		ss.Outbox = tx.Bucket(bOutbox).Stats().KeyN
		ss.LastSeq = tx.Bucket(bJournal).Sequence()
		return nil
	})
	return ss, err
}

// Change is one numbered whitelist change from the centre.
type Change struct {
	Event       string
	Prev        uint64 // the event's version before the change
	Version     uint64
	Tickets     []verify.TicketEntry // added or replaced
	Revocations []verify.Revocation
	TrustList   *verify.Envelope // nil: unchanged; must verify against the pinned root
}

// ApplyChange applies a delta in one transaction: ErrStale when the store
// already holds Version, ErrGap when it lacks Prev. A trust list must
// verify against the pinned root and not be older than the stored one;
// the new list is returned (nil when unchanged).
func (s *Store) ApplyChange(c *Change) (*verify.TrustList, error) {
	var tl *verify.TrustList
	err := s.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bMeta)
		cur, err := checkVersion(m, c.Event)
		if err != nil {
			return err
		}
		if cur >= c.Version {
			return fmt.Errorf("%w: holds %d, delta brings %d", ErrStale, cur, c.Version)
		}
		if cur < c.Prev {
			return fmt.Errorf("%w: holds %d, delta needs %d", ErrGap, cur, c.Prev)
		}
		if c.TrustList != nil {
			if tl, err = putTrust(m, c.TrustList); err != nil {
				return err
			}
		}
		tb := tx.Bucket(bTickets)
		tb.FillPercent = 0.9
		for i := range c.Tickets {
			e := &c.Tickets[i]
			if err := tb.Put(bytes.Clone(e.ID[:]), encodeEntry(e)); err != nil {
				return err
			}
		}
		rb := tx.Bucket(bRevocations)
		for _, r := range c.Revocations {
			if rb.Get(r.ID[:]) != nil {
				continue // the first revocation stands
			}
			v, _ := json.Marshal(r)
			if err := rb.Put(bytes.Clone(r.ID[:]), v); err != nil {
				return err
			}
		}
		return m.Put(kBundleVersion, binary.BigEndian.AppendUint64(nil, c.Version))
	})
	return tl, err
}

func checkVersion(m *bolt.Bucket, event string) (uint64, error) {
	if m.Get(kRoot) == nil {
		return 0, ErrNotProvisioned
	}
	if ev := m.Get(kEvent); string(ev) != event {
		return 0, fmt.Errorf("%w: store holds %q, change is for %q", ErrOtherEvent, ev, event)
	}
	return binary.BigEndian.Uint64(m.Get(kBundleVersion)), nil
}

// putTrust verifies a trust list against the pinned root and stores it
// unless it is older than the one held.
func putTrust(m *bolt.Bucket, env *verify.Envelope) (*verify.TrustList, error) {
	tl, err := verify.OpenTrustList(env, ed25519.PublicKey(m.Get(kRoot)))
	if err != nil {
		return nil, err
	}
	var old verify.Envelope
	if err := json.Unmarshal(m.Get(kTrust), &old); err == nil {
		if otl, err := verify.OpenTrustList(&old, ed25519.PublicKey(m.Get(kRoot))); err == nil && otl.Version > tl.Version {
			return nil, fmt.Errorf("%w: trust list version %d, store holds %d", ErrStale, tl.Version, otl.Version)
		}
	}
	b, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	return tl, m.Put(kTrust, b)
}

// Snapshot records, the body of snapshot chunks: a kind byte, the ticket
// id, a 2-byte length and the value: for a ticket ('T') the store's own
// entry encoding, for a revocation ('R') its JSON.
const (
	recTicket     = 'T'
	recRevocation = 'R'
)

// AppendTicketRecord appends a ticket's snapshot record to b.
func AppendTicketRecord(b []byte, e *verify.TicketEntry) []byte {
	v := encodeEntry(e)
	b = append(b, recTicket)
	b = append(b, e.ID[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// AppendRevocationRecord appends a revocation's snapshot record to b.
func AppendRevocationRecord(b []byte, r *verify.Revocation) []byte {
	v, _ := json.Marshal(r)
	b = append(b, recRevocation)
	b = append(b, r.ID[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// ErrRecord reports a malformed snapshot record.
var ErrRecord = errors.New("malformed snapshot record")

// EachRecord checks the snapshot records in b and calls fn for each; value
// aliases b. It is the parser of snapshot chunks, which come from outside.
func EachRecord(b []byte, fn func(kind byte, id verify.TicketID, value []byte) error) error {
	for len(b) > 0 {
		if len(b) < 1+verify.TicketIDLen+2 {
			return fmt.Errorf("%w: %d trailing bytes", ErrRecord, len(b))
		}
		kind := b[0]
		var id verify.TicketID
		copy(id[:], b[1:])
		n := int(binary.BigEndian.Uint16(b[1+verify.TicketIDLen:]))
		b = b[3+verify.TicketIDLen:]
		if len(b) < n {
			return fmt.Errorf("%w: value of %d bytes, %d left", ErrRecord, n, len(b))
		}
		v := b[:n]
		b = b[n:]
		switch kind {
		case recTicket:
			if _, err := decodeEntry(id, v); err != nil {
				return fmt.Errorf("%w: ticket %s: %v", ErrRecord, id, err)
			}
		case recRevocation:
			var r verify.Revocation
			if err := json.Unmarshal(v, &r); err != nil || r.ID != id {
				return fmt.Errorf("%w: revocation %s", ErrRecord, id)
			}
		default:
			return fmt.Errorf("%w: kind %q", ErrRecord, kind)
		}
		if err := fn(kind, id, v); err != nil {
			return err
		}
	}
	return nil
}

// Snapshot is a whole whitelist from the centre, in record chunks whose
// integrity the caller has checked against a signed manifest.
type Snapshot struct {
	Event     string
	Version   uint64
	CreatedAt time.Time
	TrustList *verify.Envelope
	Chunks    [][]byte
}

// ApplySnapshot replaces the whitelist, revocations and trust list, like
// Provision: used tickets, the journal and the outbox stay. It stages the
// chunks in short transactions and swaps them in at the end (see
// StageSnapshot); a caller receiving chunks one by one uses StageSnapshot
// itself and never holds them all. ErrStale when the store already holds
// Version; on any error the old whitelist stays in force.
func (s *Store) ApplySnapshot(sn *Snapshot) (*verify.TrustList, error) {
	st, err := s.StageSnapshot(sn)
	if err != nil {
		return nil, err
	}
	for _, ch := range sn.Chunks {
		if err := st.Add(ch); err != nil {
			if aerr := st.Abort(); aerr != nil {
				s.log.Warn("drop staged snapshot", "err", aerr)
			}
			return nil, err
		}
	}
	return st.Commit()
}

// MarkUsed records an admission made at another gate, unless the ticket
// has a use already (the first one stands). It reports whether it wrote.
// It rides the group commit (joinCommit): no fsync of its own.
func (s *Store) MarkUsed(id verify.TicketID, u verify.Use) (bool, error) {
	wrote := false
	err := s.joinCommit(func(tx *bolt.Tx) error {
		wrote = false
		b := tx.Bucket(bUsed)
		if b.Get(id[:]) != nil {
			return nil
		}
		v, err := json.Marshal(u)
		if err != nil {
			return err
		}
		wrote = true
		return b.Put(bytes.Clone(id[:]), v)
	})
	return wrote, err
}

// MarkUsedBatch is MarkUsed for many tickets in one transaction, the
// next group commit; it returns how many were new once they are on disk.
// A caller that applies messages one at a time gets at most one call
// through per LiveDelay this way: see MarkUsedQueued.
func (s *Store) MarkUsedBatch(ids []verify.TicketID, uses []verify.Use) (int, error) {
	n := 0
	err := s.joinCommit(func(tx *bolt.Tx) error {
		var err error
		n, err = putUses(tx, ids, uses)
		return err
	})
	return n, err
}

// MarkUsedQueued is MarkUsedBatch without waiting for the commit: it
// returns once the uses have their place in the commit order, so every
// scan decided after it returns sees them, and a caller that applies one
// message at a time (the sync link) is not held to one per LiveDelay. A
// broker acknowledges a message on receipt, before it is applied, so
// waiting would make nothing more durable. It returns how many tickets
// had no use when it was called; a failed commit is logged.
func (s *Store) MarkUsedQueued(ids []verify.TicketID, uses []verify.Use) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		b, seen := tx.Bucket(bUsed), make(map[verify.TicketID]bool, len(ids))
		for _, id := range ids {
			if !seen[id] && b.Get(id[:]) == nil {
				n++
			}
			seen[id] = true
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, s.joinQueued(func(tx *bolt.Tx) error {
		_, err := putUses(tx, ids, uses)
		return err
	})
}

// putUses stores each use whose ticket has none yet; the first stands.
func putUses(tx *bolt.Tx, ids []verify.TicketID, uses []verify.Use) (int, error) {
	b, n := tx.Bucket(bUsed), 0
	for i, id := range ids {
		if b.Get(id[:]) != nil {
			continue
		}
		v, err := json.Marshal(uses[i])
		if err != nil {
			return n, err
		}
		if err := b.Put(bytes.Clone(id[:]), v); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
