package centre

import (
	"encoding/json"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// Snapshot is an event's whole whitelist at one version, cut into chunks
// of snapshot records (cache.EachRecord reads them) for the wire.
type Snapshot struct {
	Event       string
	Version     uint64
	TrustList   *verify.Envelope
	Tickets     int
	Revocations int
	Chunks      [][]byte
}

// SnapshotChunkBytes is the default chunk size: small enough for any
// broker's packet limit, large enough that a million tickets take a few
// hundred messages.
const SnapshotChunkBytes = 64 << 10

// Snapshot reads an event's whitelist, revocations and trust list in one
// transaction. Tickets come in id order (bbolt's key order), so a gate
// inserts them sequentially.
func (c *Centre) Snapshot(event string, chunkBytes int) (*Snapshot, error) {
	if chunkBytes <= 0 {
		chunkBytes = SnapshotChunkBytes
	}
	s := &Snapshot{Event: event}
	var cur []byte
	flush := func(force bool) {
		if len(cur) >= chunkBytes || (force && len(cur) > 0) {
			s.Chunks = append(s.Chunks, cur)
			cur = make([]byte, 0, chunkBytes+512)
		}
	}
	cur = make([]byte, 0, chunkBytes+512)
	err := c.db.View(func(tx *bolt.Tx) error {
		s.Version = version(tx)
		var err error
		if s.TrustList, err = c.trustList(tx); err != nil {
			return err
		}
		inEvent := map[verify.TicketID]bool{}
		err = tx.Bucket(bTickets).ForEach(func(_, v []byte) error {
			var t struct {
				Ticket
				Credential json.RawMessage `json:"credential"` // not needed: skip decoding it
			}
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			if t.Event != event {
				return nil
			}
			e := entryOf(&t.Ticket)
			cur = cache.AppendTicketRecord(cur, &e)
			s.Tickets++
			flush(false)
			if tx.Bucket(bRevoked).Get(t.ID[:]) != nil {
				inEvent[t.ID] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bRevoked).ForEach(func(k, v []byte) error {
			var r verify.Revocation
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if inEvent[r.ID] {
				cur = cache.AppendRevocationRecord(cur, &r)
				s.Revocations++
				flush(false)
			}
			return nil
		})
	})
	flush(true)
	return s, err
}
