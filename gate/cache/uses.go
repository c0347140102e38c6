package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// The gate's side of the centre's uses log: every first admission of the
// event, numbered. The store keeps a cursor, the highest number below
// which it holds every logged use; a gate that was away (its restart, the
// centre's, the broker's, a long partition) asks from its cursor, so it
// learns every admission made elsewhere before it could admit the ticket
// again.

var kUsesCursor = []byte("uses_cursor")

// UsesCursor returns the number of the last logged use the store holds
// with every one before it (0: none).
func (s *Store) UsesCursor() (uint64, error) {
	var n uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bMeta).Get(kUsesCursor); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	return n, err
}

// Used returns the first use the store holds of a ticket, nil when none.
func (s *Store) Used(id verify.TicketID) (*verify.Use, error) {
	var u *verify.Use
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bUsed).Get(id[:])
		if v == nil {
			return nil
		}
		u = new(verify.Use)
		return json.Unmarshal(v, u)
	})
	return u, err
}

// ApplyUses stores the logged uses from..to of the event (ids[i] used as
// uses[i]; the first use of a ticket stands) and, when they continue the
// cursor (from <= cursor+1), advances it to to, in one transaction. Uses
// past a gap are stored all the same, but the cursor stays until the gap
// is filled. from 0 restarts the cursor at to, lower or not (the centre's
// log was restored from an older copy). It returns how many uses were new
// and the cursor after.
func (s *Store) ApplyUses(from, to uint64, ids []verify.TicketID, uses []verify.Use) (int, uint64, error) {
	n, cursor := 0, uint64(0)
	err := s.joinCommit(applyUses(from, to, ids, uses, &n, &cursor))
	return n, cursor, err
}

// ApplyUsesQueued is ApplyUses for the sync link, which applies messages one
// at a time: it returns once the write has its place in the commit order
// (every scan recorded after it sees the uses), without waiting for the
// disk, so an idle gate is not held to one message per Options.LiveDelay
// while its fsyncs still do not grow with the venue's admissions. A crash
// before the commit loses the uses and the cursor together: the next
// catch-up brings them again. Errors are logged by the store.
func (s *Store) ApplyUsesQueued(from, to uint64, ids []verify.TicketID, uses []verify.Use) error {
	var n int
	var cursor uint64
	return s.joinQueued(applyUses(from, to, ids, uses, &n, &cursor))
}

// Flush waits until every write queued before it is committed.
func (s *Store) Flush() error {
	return s.joinCommit(func(*bolt.Tx) error { return nil })
}

// NextUsesCursor is the cursor ApplyUses leaves after from..to on a store
// holding cursor: the link mirrors it without reading the store.
func NextUsesCursor(cursor, from, to uint64) uint64 {
	if from == 0 || (from <= cursor+1 && to > cursor) {
		return to
	}
	return cursor
}

func applyUses(from, to uint64, ids []verify.TicketID, uses []verify.Use, np *int, cursorp *uint64) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		n, cursor := 0, uint64(0)
		defer func() { *np, *cursorp = n, cursor }()
		m, b := tx.Bucket(bMeta), tx.Bucket(bUsed)
		if v := m.Get(kUsesCursor); len(v) == 8 {
			cursor = binary.BigEndian.Uint64(v)
		}
		for i, id := range ids {
			if b.Get(id[:]) != nil {
				continue
			}
			v, err := json.Marshal(uses[i])
			if err != nil {
				return err
			}
			if err := b.Put(bytes.Clone(id[:]), v); err != nil {
				return err
			}
			n++
		}
		if next := NextUsesCursor(cursor, from, to); next != cursor {
			cursor = next
			return m.Put(kUsesCursor, binary.BigEndian.AppendUint64(nil, cursor))
		}
		return nil
	}
}
