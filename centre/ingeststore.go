package centre

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	bolt "go.etcd.io/bbolt"
)

// IngestStore holds the books of gate entries: the part of the centre's
// state that several gatesync instances share when they share ingest.
// Keys, tickets and the delta log stay in the centre directory.
//
// Implementations are safe for concurrent use by several goroutines and,
// where the backing store allows it (PostgreSQL), by several processes:
// every entry is stored exactly once however batches race.
type IngestStore interface {
	// Ingest stores a batch in one transaction: an entry whose (gate,
	// instance, seq) or entry id is already in the books is a duplicate
	// and skipped; the rest get the next record numbers. A new admission
	// of a ticket the books already hold an admission for is a conflict
	// unless the entry is a re-entry or in.Reentry says the ticket allows
	// it. The gate's state is updated in the same transaction. On error
	// nothing is stored.
	Ingest(in IngestBatch) (*IngestResult, error)
	// Entries returns up to limit records with N above since, by N. A
	// record committed after a call never has an N at or below a record
	// that call returned, so paging by N misses nothing.
	Entries(since uint64, limit int) ([]Record, error)
	// Conflicts returns every recorded conflict, by N.
	Conflicts() ([]Conflict, error)
	// UpdateGate applies fn to the state of venue's gate (a zero state
	// naming them when the gate is new) and stores it, atomically.
	UpdateGate(venue, gate string, fn func(*GateState)) error
	// Gates returns the state of every gate.
	Gates() ([]GateState, error)
	// Uses returns up to limit uses of event's uses log numbered above
	// after, in order, and the log's head (its last number). Every new
	// first admission Ingest books gets the event's next number in the
	// batch's transaction, so numbers are handed out in commit order and
	// a gate paging by number misses none.
	Uses(event string, after uint64, limit int) ([]wire.LoggedUse, uint64, error)
	// AddAlerts books alerts, numbering them.
	AddAlerts(as []Alert) error
	// Alerts returns up to limit alerts with N above since, by N.
	Alerts(since uint64, limit int) ([]Alert, error)
}

// IngestBatch is a parsed batch from a gate with what the store needs
// besides.
type IngestBatch struct {
	Venue string
	Batch *wire.ParsedBatch
	// At is when the centre received the batch (ReceivedAt, DetectedAt).
	At time.Time
	// Reentry reports whether a ticket allows re-entry (nil: none does).
	Reentry func(verify.TicketID) bool
	// Unproven holds, by seq, admissions whose scanned code did not
	// verify: each is booked as an entry and, when new, as its alert (the
	// store fills in N, Venue, Gate, EntryID and At), never as a use or a
	// conflict.
	Unproven map[uint64]Alert
}

// BoltIngest is the IngestStore in a bbolt file, by default the centre's
// own central.db. One process at a time: bbolt locks the file.
type BoltIngest struct {
	db     *bolt.DB
	closer bool
}

// OpenBoltIngest opens (creating) a bbolt file that holds only the books
// of entries, for tools and tests; gatesync keeps them in central.db.
func OpenBoltIngest(path string) (*BoltIngest, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open ingest store: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range syncBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open ingest store: %w", err)
	}
	return &BoltIngest{db: db, closer: true}, nil
}

// Close closes a store opened with OpenBoltIngest; the centre's own is
// closed with the centre.
func (s *BoltIngest) Close() error {
	if !s.closer {
		return nil
	}
	return s.db.Close()
}

// Ingest implements IngestStore.
func (s *BoltIngest) Ingest(in IngestBatch) (*IngestResult, error) {
	res := &IngestResult{}
	b, venue, now := in.Batch, in.Venue, in.At
	err := s.db.Update(func(tx *bolt.Tx) error {
		*res = IngestResult{}
		sk := streamKey(b.Gate, b.Instance)
		streams, seqs, entries, ids, uses := tx.Bucket(bStreams), tx.Bucket(bSeqs), tx.Bucket(bEntries), tx.Bucket(bEntryIDs), tx.Bucket(bUses)
		useLog, heads := tx.Bucket(bUseLog), tx.Bucket(bUseHeads)
		var storedTo uint64
		if v := streams.Get(sk); len(v) == 8 {
			storedTo = binary.BigEndian.Uint64(v)
		}
		seqKey := func(seq uint64) []byte { return binary.BigEndian.AppendUint64(append(bytes.Clone(sk), 0), seq) }
		for i, e := range b.Parsed {
			if e.Seq <= storedTo || seqs.Get(seqKey(e.Seq)) != nil || ids.Get([]byte(e.ID)) != nil {
				res.Duplicate++
				continue
			}
			n, err := entries.NextSequence()
			if err != nil {
				return err
			}
			nk := binary.BigEndian.AppendUint64(nil, n)
			rec, err := json.Marshal(Record{N: n, Venue: venue, Gate: b.Gate, ID: e.ID, ReceivedAt: now,
				ClockOffsetMs: b.ClockOffsetMs, Entry: b.Entries[i]})
			if err != nil {
				return err
			}
			if err := entries.Put(nk, rec); err != nil {
				return err
			}
			if err := seqs.Put(seqKey(e.Seq), nk); err != nil {
				return err
			}
			if err := ids.Put([]byte(e.ID), nk); err != nil {
				return err
			}
			res.New++
			if e.Verdict != cache.Admit {
				continue
			}
			tid, _ := verify.ParseTicketID(e.Ticket) // ParseBatch checked it
			if a, ok := in.Unproven[e.Seq]; ok {
				res.Alerts = append(res.Alerts, UnprovenAlert(in, e, a))
				continue
			}
			adm := Admission{Venue: venue, Gate: b.Gate, EntryID: e.ID, At: e.At}
			if prev := uses.Get(tid[:]); prev != nil {
				var first Admission
				if err := json.Unmarshal(prev, &first); err != nil {
					return fmt.Errorf("use record of %s: %w", tid, err)
				}
				cf, ok := ConflictOf(in, e, tid, first, adm)
				if !ok {
					continue
				}
				cb := tx.Bucket(bConflicts)
				if cf.N, err = cb.NextSequence(); err != nil {
					return err
				}
				v, _ := json.Marshal(cf)
				if err := cb.Put(binary.BigEndian.AppendUint64(nil, cf.N), v); err != nil {
					return err
				}
				res.Conflicts = append(res.Conflicts, cf)
				continue
			}
			v, _ := json.Marshal(adm)
			if err := uses.Put(bytes.Clone(tid[:]), v); err != nil {
				return err
			}
			head := uint64(0)
			if v := heads.Get([]byte(e.Event)); len(v) == 8 {
				head = binary.BigEndian.Uint64(v)
			}
			lu := EventUse{Event: e.Event, LoggedUse: wire.LoggedUse{N: head + 1, Ticket: tid, Gate: b.Gate, At: e.At, Seq: e.Seq, EntryID: e.ID}}
			v, _ = json.Marshal(lu.LoggedUse)
			if err := useLog.Put(useLogKey(e.Event, lu.N), v); err != nil {
				return err
			}
			if err := heads.Put([]byte(e.Event), binary.BigEndian.AppendUint64(nil, lu.N)); err != nil {
				return err
			}
			res.Admitted = append(res.Admitted, adm)
			res.Tickets = append(res.Tickets, tid)
			res.Seqs = append(res.Seqs, e.Seq)
			res.Logged = append(res.Logged, lu)
		}
		for seqs.Get(seqKey(storedTo+1)) != nil {
			storedTo++
		}
		res.StoredTo = storedTo
		if err := streams.Put(sk, binary.BigEndian.AppendUint64(nil, storedTo)); err != nil {
			return err
		}
		if err := updateGate(tx, venue, b.Gate, func(g *GateState) { IngestedGate(g, in, res) }); err != nil {
			return err
		}
		return putAlerts(tx, res.Alerts)
	})
	return res, err
}

func useLogKey(event string, n uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(event+"\x00"), n)
}

func putAlerts(tx *bolt.Tx, as []Alert) error {
	b := tx.Bucket(bAlerts)
	for i := range as {
		n, err := b.NextSequence()
		if err != nil {
			return err
		}
		as[i].N = n
		v, _ := json.Marshal(as[i])
		if err := b.Put(binary.BigEndian.AppendUint64(nil, n), v); err != nil {
			return err
		}
	}
	return nil
}

// UnprovenAlert is the alert booked for e, an admission in Unproven;
// every IngestStore books it so.
func UnprovenAlert(in IngestBatch, e wire.Entry, a Alert) Alert {
	a.Venue, a.Gate, a.EntryID, a.At = in.Venue, in.Batch.Gate, e.ID, in.At
	if a.Ticket == "" {
		a.Ticket = e.Ticket
	}
	return a
}

// Uses implements IngestStore.
func (s *BoltIngest) Uses(event string, after uint64, limit int) ([]wire.LoggedUse, uint64, error) {
	var out []wire.LoggedUse
	var head uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bUseHeads).Get([]byte(event)); len(v) == 8 {
			head = binary.BigEndian.Uint64(v)
		}
		prefix := []byte(event + "\x00")
		cur := tx.Bucket(bUseLog).Cursor()
		for k, v := cur.Seek(useLogKey(event, after+1)); k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8 && len(out) < limit; k, v = cur.Next() {
			var u wire.LoggedUse
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("uses log of %q: %w", event, err)
			}
			out = append(out, u)
		}
		return nil
	})
	return out, head, err
}

// AddAlerts implements IngestStore.
func (s *BoltIngest) AddAlerts(as []Alert) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putAlerts(tx, as) })
}

// Alerts implements IngestStore.
func (s *BoltIngest) Alerts(since uint64, limit int) ([]Alert, error) {
	out := []Alert{}
	err := s.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bAlerts).Cursor()
		for k, v := cur.Seek(binary.BigEndian.AppendUint64(nil, since+1)); k != nil && len(out) < limit; k, v = cur.Next() {
			var a Alert
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

// ConflictOf decides whether adm, a new admission of tid whose first
// admission is first, is a conflict (re-entries are not); every
// IngestStore decides by it.
func ConflictOf(in IngestBatch, e wire.Entry, tid verify.TicketID, first, adm Admission) (Conflict, bool) {
	if e.Reason == verify.ReasonReentry || (in.Reentry != nil && in.Reentry(tid)) {
		return Conflict{}, false
	}
	cf := Conflict{Ticket: tid, Kind: "two_gates", First: first, Second: adm, DetectedAt: in.At}
	if first.Gate == adm.Gate && first.Venue == adm.Venue {
		cf.Kind = "twice"
	}
	return cf, true
}

// IngestedGate is what an ingested batch does to its gate's state; every
// IngestStore applies it in the batch's transaction.
func IngestedGate(g *GateState, in IngestBatch, res *IngestResult) {
	res.PrevInstance = g.Instance
	g.LastSeen, g.Instance, g.StoredTo, g.ClockOffsetMs = in.At, in.Batch.Instance, res.StoredTo, in.Batch.ClockOffsetMs
	g.Entries += res.New
	g.Conflicts += len(res.Conflicts)
}

// Entries implements IngestStore.
func (s *BoltIngest) Entries(since uint64, limit int) ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bEntries).Cursor()
		for k, v := cur.Seek(binary.BigEndian.AppendUint64(nil, since+1)); k != nil && len(out) < limit; k, v = cur.Next() {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Conflicts implements IngestStore.
func (s *BoltIngest) Conflicts() ([]Conflict, error) {
	out := []Conflict{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bConflicts).ForEach(func(_, v []byte) error {
			var cf Conflict
			if err := json.Unmarshal(v, &cf); err != nil {
				return err
			}
			out = append(out, cf)
			return nil
		})
	})
	return out, err
}

// UpdateGate implements IngestStore.
func (s *BoltIngest) UpdateGate(venue, gate string, fn func(*GateState)) error {
	return s.db.Update(func(tx *bolt.Tx) error { return updateGate(tx, venue, gate, fn) })
}

// Gates implements IngestStore.
func (s *BoltIngest) Gates() ([]GateState, error) {
	out := []GateState{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bGates).ForEach(func(_, v []byte) error {
			var g GateState
			if err := json.Unmarshal(v, &g); err != nil {
				return err
			}
			out = append(out, g)
			return nil
		})
	})
	return out, err
}

func updateGate(tx *bolt.Tx, venue, gate string, fn func(*GateState)) error {
	b := tx.Bucket(bGates)
	k := []byte(venue + "/" + gate)
	g := GateState{Venue: venue, Gate: gate}
	if v := b.Get(k); v != nil {
		if err := json.Unmarshal(v, &g); err != nil {
			return err
		}
	}
	fn(&g)
	v, err := json.Marshal(g)
	if err != nil {
		return err
	}
	return b.Put(k, v)
}
