package centre

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// Books is a part of the books of entries as one store exports them and
// another imports them (gatesync move-books): every field holds records
// exactly as the exporting store keeps them, numbers included.
type Books struct {
	Entries   []BookEntry
	Streams   []Stream
	Uses      []Use
	Conflicts []Conflict
	Gates     []GateState
	Reentry   []verify.TicketID
	// UseLog and Alerts are the uses log (every event's, numbers kept, so
	// gates' cursors stay valid) and the alerts (numbers kept).
	UseLog []EventUse
	Alerts []Alert
	// EntrySeq and ConflictSeq, when not zero, are the last record and
	// conflict numbers the exporting store handed out: the importing
	// store hands out numbers above them (and above every N it imported).
	EntrySeq, ConflictSeq uint64
}

// Len is how many records b holds.
func (b *Books) Len() int {
	return len(b.Entries) + len(b.Streams) + len(b.Uses) + len(b.Conflicts) + len(b.Gates) + len(b.Reentry) + len(b.UseLog) + len(b.Alerts)
}

// BookEntry is a stored entry with the gate instance and sequence number
// it was deduplicated by.
type BookEntry struct {
	Record
	Instance string
	Seq      uint64
}

// Stream is how far a gate instance's entries are stored without a gap.
type Stream struct {
	Gate, Instance string
	StoredTo       uint64
}

// Use is the first admission of a ticket.
type Use struct {
	Ticket verify.TicketID
	First  Admission
}

// Export calls fn with the whole books, chunk records at a time (0:
// 1000), all read in one read transaction: entries (ordered by gate,
// instance and sequence), then streams, uses, conflicts and gate states;
// the last call carries the record and conflict counters. b is fn's to
// keep: Export never touches a chunk again once it has handed it over.
func (s *BoltIngest) Export(chunk int, fn func(b *Books) error) error {
	if chunk <= 0 {
		chunk = 1000
	}
	return s.db.View(func(tx *bolt.Tx) error { return exportBooks(tx, chunk, fn) })
}

func exportBooks(tx *bolt.Tx, chunk int, fn func(b *Books) error) error {
	b := &Books{}
	flush := func(force bool) error {
		if b.Len() < chunk && !force {
			return nil
		}
		if err := fn(b); err != nil {
			return err
		}
		b = &Books{}
		return nil
	}
	entries, seqs := tx.Bucket(bEntries), tx.Bucket(bSeqs)
	n := 0
	// Every entry is in seqs under the stream it came in: walk that, for
	// the instance and sequence number the record itself does not keep.
	err := seqs.ForEach(func(k, v []byte) error {
		gate, instance, seq, ok := parseSeqKey(k)
		if !ok || len(v) != 8 {
			return fmt.Errorf("central.db: malformed sequence record %q", k)
		}
		raw := entries.Get(v)
		if raw == nil {
			return fmt.Errorf("central.db: sequence record %s/%s/%d names record %d, which is missing", gate, instance, seq, binary.BigEndian.Uint64(v))
		}
		var r Record
		if err := json.Unmarshal(raw, &r); err != nil {
			return fmt.Errorf("central.db: record %d: %w", binary.BigEndian.Uint64(v), err)
		}
		if r.N != binary.BigEndian.Uint64(v) || r.Gate != gate {
			return fmt.Errorf("central.db: sequence record %s/%s/%d names record %d (n %d, gate %s)", gate, instance, seq, binary.BigEndian.Uint64(v), r.N, r.Gate)
		}
		b.Entries = append(b.Entries, BookEntry{Record: r, Instance: instance, Seq: seq})
		n++
		return flush(false)
	})
	if err != nil {
		return err
	}
	if have := entries.Stats().KeyN; have != n {
		return fmt.Errorf("central.db: %d records but %d of them in sequence records", have, n)
	}
	if err := tx.Bucket(bStreams).ForEach(func(k, v []byte) error {
		gate, instance, ok := bytes.Cut(k, []byte{0})
		if !ok || len(v) != 8 {
			return fmt.Errorf("central.db: malformed stream %q", k)
		}
		b.Streams = append(b.Streams, Stream{Gate: string(gate), Instance: string(instance), StoredTo: binary.BigEndian.Uint64(v)})
		return flush(false)
	}); err != nil {
		return err
	}
	if err := tx.Bucket(bUses).ForEach(func(k, v []byte) error {
		u := Use{}
		if len(k) != len(u.Ticket) {
			return fmt.Errorf("central.db: malformed use record %x", k)
		}
		copy(u.Ticket[:], k)
		if err := json.Unmarshal(v, &u.First); err != nil {
			return fmt.Errorf("central.db: use record of %s: %w", u.Ticket, err)
		}
		b.Uses = append(b.Uses, u)
		return flush(false)
	}); err != nil {
		return err
	}
	if err := tx.Bucket(bConflicts).ForEach(func(k, v []byte) error {
		var cf Conflict
		if err := json.Unmarshal(v, &cf); err != nil {
			return fmt.Errorf("central.db: conflict %x: %w", k, err)
		}
		b.Conflicts = append(b.Conflicts, cf)
		return flush(false)
	}); err != nil {
		return err
	}
	if err := tx.Bucket(bGates).ForEach(func(k, v []byte) error {
		var g GateState
		if err := json.Unmarshal(v, &g); err != nil {
			return fmt.Errorf("central.db: gate %s: %w", k, err)
		}
		b.Gates = append(b.Gates, g)
		return flush(false)
	}); err != nil {
		return err
	}
	if err := tx.Bucket(bUseLog).ForEach(func(k, v []byte) error {
		ev, _, ok := bytes.Cut(k, []byte{0})
		if !ok || len(k) != len(ev)+9 {
			return fmt.Errorf("central.db: malformed uses log key %q", k)
		}
		u := EventUse{Event: string(ev)}
		if err := json.Unmarshal(v, &u.LoggedUse); err != nil {
			return fmt.Errorf("central.db: uses log %q: %w", k, err)
		}
		b.UseLog = append(b.UseLog, u)
		return flush(false)
	}); err != nil {
		return err
	}
	if err := tx.Bucket(bAlerts).ForEach(func(k, v []byte) error {
		var a Alert
		if err := json.Unmarshal(v, &a); err != nil {
			return fmt.Errorf("central.db: alert %x: %w", k, err)
		}
		b.Alerts = append(b.Alerts, a)
		return flush(false)
	}); err != nil {
		return err
	}
	b.EntrySeq, b.ConflictSeq = entries.Sequence(), tx.Bucket(bConflicts).Sequence()
	return flush(true)
}

// parseSeqKey splits a key of bSeqs: gate \x00 instance \x00 seq(8).
func parseSeqKey(k []byte) (gate, instance string, seq uint64, ok bool) {
	if len(k) < 10 || k[len(k)-9] != 0 {
		return "", "", 0, false
	}
	g, i, ok := bytes.Cut(k[:len(k)-9], []byte{0})
	if !ok {
		return "", "", 0, false
	}
	return string(g), string(i), binary.BigEndian.Uint64(k[len(k)-8:]), true
}

// ExportBooks exports the books of entries in central.db, whatever store
// SetIngestStore made the centre's (see BoltIngest.Export), then its
// re-entry tickets, which books shared by several instances keep too
// (ReentryBook).
func (c *Centre) ExportBooks(chunk int, fn func(b *Books) error) error {
	if chunk <= 0 {
		chunk = 1000
	}
	return c.db.View(func(tx *bolt.Tx) error {
		if err := exportBooks(tx, chunk, fn); err != nil {
			return err
		}
		ids, err := reentryTickets(tx)
		if err != nil {
			return err
		}
		for i := 0; i < len(ids); i += chunk {
			if err := fn(&Books{Reentry: ids[i:min(i+chunk, len(ids))]}); err != nil {
				return err
			}
		}
		return nil
	})
}
