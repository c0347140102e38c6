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
	err := s.joinCommit(func(tx *bolt.Tx) error {
		n, cursor = 0, 0
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
		if from == 0 || (from <= cursor+1 && to > cursor) {
			cursor = to
			return m.Put(kUsesCursor, binary.BigEndian.AppendUint64(nil, cursor))
		}
		return nil
	})
	return n, cursor, err
}
