package cache

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// Entry is one journal record: a decision as it was signalled. The JSON
// field names are a contract: `gated run --output json` and `gated journal`
// print exactly this, and scripts read it.
type Entry struct {
	Seq           uint64        `json:"seq"`
	ID            string        `json:"id"` // unique across gates and store re-creations
	At            time.Time     `json:"at"`
	Gate          string        `json:"gate"`
	Event         string        `json:"event,omitempty"`
	Scanner       string        `json:"scanner,omitempty"`
	Symbology     string        `json:"symbology,omitempty"` // AIM identifier the scanner reported, e.g. "]Q1"
	Verdict       string        `json:"verdict"`             // "admit" or "deny"
	Reason        verify.Reason `json:"reason"`
	Detail        string        `json:"detail,omitempty"`
	Ticket        string        `json:"ticket,omitempty"`
	Serial        uint16        `json:"serial,omitempty"`
	Kind          string        `json:"kind,omitempty"`
	Zone          string        `json:"zone,omitempty"`
	Holder        string        `json:"holder,omitempty"`
	CodeTime      time.Time     `json:"code_time,omitzero"`
	FirstUsedAt   time.Time     `json:"first_used_at,omitzero"`
	FirstUsedGate string        `json:"first_used_gate,omitempty"`
	// Code is the scanned text of an admission, sent up so the centre can
	// check the signatures before it counts the use (proof of presentation).
	Code string `json:"code,omitempty"`
}

// Verdict strings.
const (
	Admit = "admit"
	Deny  = "deny"
)

// Scan is one scan to decide: the parsed token (nil when it did not parse)
// and the result of the stateless checks done before the transaction.
type Scan struct {
	At      time.Time
	Gate    string
	Scanner string
	// Symbology is the AIM identifier the scanner reported, if any.
	Symbology string
	Token     *verify.Token
	Pre       verify.Result // a non-empty Reason is final
	// Code is the scanned text; an admission's journal record carries it.
	Code string
}

type request struct {
	v     *verify.Verifier
	scan  Scan
	entry Entry
	err   error
	done  chan struct{}
}

// Record decides a scan against the store and commits the decision, its
// journal and outbox records, and the ticket's use, durably, before it
// returns. On a storage error nothing was committed, and the returned entry
// is a DENY with reason storage_failure that the caller must still signal.
func (s *Store) Record(ctx context.Context, v *verify.Verifier, sc Scan) (Entry, error) {
	r := &request{v: v, scan: sc, done: make(chan struct{})}
	select {
	case s.reqs <- r:
	case <-s.quit:
		return failed(sc, ErrClosed), ErrClosed
	case <-ctx.Done():
		return failed(sc, ctx.Err()), ctx.Err()
	}
	<-r.done // once queued, the decision is committed or failed; never abandoned half-way
	return r.entry, r.err
}

func failed(sc Scan, err error) Entry {
	e := Entry{At: sc.At, Gate: sc.Gate, Scanner: sc.Scanner, Verdict: Deny,
		Reason: verify.ReasonStorageFailure, Detail: err.Error()}
	if sc.Token != nil {
		e.Ticket = sc.Token.Credential.Ticket.String()
	}
	return e
}

// loop is the group committer: it takes the first waiting scan, then every
// other scan already waiting, and decides them in order in one transaction.
// Deciding inside the transaction, in arrival order, is what makes a second
// scan of a ticket in the same batch see the first one's use.
func (s *Store) loop() {
	defer close(s.done)
	batch := make([]*request, 0, s.maxBatch)
	for {
		var r *request
		select {
		case r = <-s.reqs:
		case <-s.quit:
			return
		}
		batch = append(batch[:0], r)
	fill:
		for len(batch) < s.maxBatch {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, r := range batch {
				var err error
				if r.entry, err = s.apply(tx, r.v, r.scan); err != nil {
					return err
				}
			}
			return nil
		})
		for _, r := range batch {
			if err != nil {
				s.log.Error("commit failed", "err", err, "batch", len(batch))
				r.entry, r.err = failed(r.scan, err), fmt.Errorf("commit decision: %w", err)
			}
			close(r.done)
		}
	}
}

func (s *Store) apply(tx *bolt.Tx, v *verify.Verifier, sc Scan) (Entry, error) {
	e := Entry{At: sc.At, Gate: sc.Gate, Scanner: sc.Scanner, Symbology: sc.Symbology, Event: v.Policy().Event}
	res := sc.Pre
	var used *verify.Use
	if t := sc.Token; t != nil {
		c := &t.Credential
		e.Ticket, e.Serial, e.Kind, e.Zone, e.CodeTime = c.Ticket.String(), c.Serial, t.Kind.String(), c.Zone, t.CodeTime
		if res.Reason == "" {
			var f verify.Facts
			var err error
			if f, err = facts(tx, c.Ticket); err != nil {
				return e, err
			}
			if f.Entry != nil {
				e.Holder = f.Entry.Holder
			}
			res = v.Decide(t, f)
			used = f.Used
			if t.Kind != verify.KindStatic && t.CodeTime.After(f.LastCode) {
				// The device signature verified: remember the newest code
				// whatever the verdict, so an older one is never taken later.
				if err := tx.Bucket(bCodes).Put(c.Ticket[:], binary.BigEndian.AppendUint64(nil, uint64(t.CodeTime.Unix()))); err != nil {
					return e, err
				}
			}
		}
	}
	e.Reason, e.Detail = res.Reason, res.Detail
	e.Verdict = Deny
	if res.Reason.Admits() {
		e.Verdict = Admit
	}
	if used != nil {
		e.FirstUsedAt, e.FirstUsedGate = used.At, used.Gate
	}
	if e.Verdict == Admit {
		e.Code = sc.Code
	}
	j := tx.Bucket(bJournal)
	seq, err := j.NextSequence()
	if err != nil {
		return e, err
	}
	e.Seq = seq
	e.ID = s.instance + "-" + strconv.FormatUint(seq, 10)
	if e.Verdict == Admit && used == nil {
		u, _ := json.Marshal(verify.Use{Seq: seq, At: e.At, Gate: e.Gate})
		if err := tx.Bucket(bUsed).Put(sc.Token.Credential.Ticket[:], u); err != nil {
			return e, err
		}
	}
	rec, err := json.Marshal(&e)
	if err != nil {
		return e, err
	}
	key := binary.BigEndian.AppendUint64(nil, seq)
	if err := j.Put(key, rec); err != nil {
		return e, err
	}
	return e, tx.Bucket(bOutbox).Put(key, nil)
}

func facts(tx *bolt.Tx, id verify.TicketID) (verify.Facts, error) {
	var f verify.Facts
	if v := tx.Bucket(bTickets).Get(id[:]); v != nil {
		e, err := decodeEntry(id, v)
		if err != nil {
			return f, err
		}
		f.Entry = e
	}
	if v := tx.Bucket(bRevocations).Get(id[:]); v != nil {
		f.Revoked = new(verify.Revocation)
		if err := json.Unmarshal(v, f.Revoked); err != nil {
			return f, fmt.Errorf("corrupt revocation: %w", err)
		}
	}
	if v := tx.Bucket(bUsed).Get(id[:]); v != nil {
		f.Used = new(verify.Use)
		if err := json.Unmarshal(v, f.Used); err != nil {
			return f, fmt.Errorf("corrupt use record: %w", err)
		}
	}
	if v := tx.Bucket(bCodes).Get(id[:]); len(v) == 8 {
		f.LastCode = time.Unix(int64(binary.BigEndian.Uint64(v)), 0).UTC()
	}
	return f, nil
}

// Journal calls fn for every journal record from sequence number from on,
// in order. fn must not keep the entry's slices beyond the call.
func (s *Store) Journal(from uint64, fn func(Entry) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bJournal).Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, from)); k != nil; k, v = c.Next() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("journal record %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}
