package cache

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// Decision is one journal record: a decision as it was signalled. The JSON
// field names are a contract: `gated run --output json` and `gated journal`
// print exactly this, and scripts read it.
type Decision struct {
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

// Scan is one scan to decide. Checked, set when the scan parsed and was
// checked, is decided in the transaction. Without it, Pre is the final
// result (a scan that did not parse, a whitelist read that failed) and
// Token, if set, names the ticket in the journal.
type Scan struct {
	At      time.Time
	Gate    string
	Scanner string
	// Symbology is the AIM identifier the scanner reported, if any.
	Symbology string
	Checked   *verify.Checked
	Token     *verify.Token
	Pre       verify.Result
	// Code is the scanned text; an admission's journal record carries it.
	Code string
}

type request struct {
	v     *verify.Verifier
	scan  Scan
	fn    func(*bolt.Tx) error // a joined write (joinCommit); nil for a scan
	async bool                 // nobody waits: an error is logged (joinQueued)
	entry Decision
	err   error
	done  chan struct{}
}

// Record decides a scan against the store and commits the decision, its
// journal and outbox records, and the ticket's use, durably, before it
// returns. On a storage error nothing was committed, and the returned decision
// is a DENY with reason storage_failure that the caller must still signal.
// When a commit reports failure, the store is reopened and read back before
// Record answers: if the decision turned out durable after all, Record
// returns it with a nil error, so what is signalled is what is stored.
func (s *Store) Record(ctx context.Context, v *verify.Verifier, sc Scan) (Decision, error) {
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

// joinCommit runs fn inside the next group commit, so a write that is not a
// scan (another gate's admission arriving by sync) shares the decisions'
// fsync instead of paying its own. With no scan waiting, joined writes
// commit at most once per Options.LiveDelay, so it waits up to that long. fn may run more than once (a
// batch is rerun when a batch-mate fails): it must reset what it counts.
// It returns fn's error, or the commit's.
func (s *Store) joinCommit(fn func(tx *bolt.Tx) error) error {
	r := &request{fn: fn, done: make(chan struct{})}
	select {
	case s.reqs <- r:
	case <-s.quit:
		return ErrClosed
	}
	<-r.done
	return r.err
}

// joinQueued is joinCommit for a caller that must not wait for the disk:
// it returns as soon as fn has its place in the commit order, so every
// scan recorded after it returns sees fn's writes (they are in the same
// commit or an earlier one). fn's error, or the commit's, is logged. A
// caller that applies messages one at a time (the sync link) would
// otherwise be held to one message per LiveDelay.
func (s *Store) joinQueued(fn func(tx *bolt.Tx) error) error {
	select {
	case s.reqs <- &request{fn: fn, async: true, done: make(chan struct{})}:
		return nil
	case <-s.quit:
		return ErrClosed
	}
}

// finish answers a request: wakes its caller, or logs the error of one
// nobody waits for.
func (s *Store) finish(r *request) {
	if r.async && r.err != nil {
		s.logLimited("queued write not stored", "err", r.err)
	}
	close(r.done)
}

func failed(sc Scan, err error) Decision {
	e := Decision{At: sc.At, Gate: sc.Gate, Scanner: sc.Scanner, Verdict: Deny,
		Reason: verify.ReasonStorageFailure, Detail: err.Error()}
	if id, ok := sc.ticket(); ok {
		e.Ticket = id.String()
	}
	return e
}

// ticket is the scanned ticket's id, if the scan parsed.
func (sc Scan) ticket() (verify.TicketID, bool) {
	switch {
	case sc.Checked != nil:
		return sc.Checked.Credential().Ticket, true
	case sc.Token != nil:
		return sc.Token.Credential.Ticket, true
	}
	return verify.TicketID{}, false
}

// loop is the group committer: it takes the first waiting request, then
// every other request already waiting, and runs them in order in one
// transaction. Deciding inside the transaction, in arrival order, is what
// makes a second scan of a ticket in the same batch see the first one's use.
func (s *Store) loop() {
	defer close(s.done)
	batch := make([]*request, 0, s.maxBatch)
	var last time.Time // when the last batch was committed
	for {
		var r *request
		select {
		case r = <-s.reqs:
		case <-s.quit:
			return
		}
		s.commit(s.fill(append(batch[:0], r), last), false)
		last = time.Now()
	}
}

// fill adds the requests already waiting. A batch that holds only joined
// writes is held until liveDelay after the last commit, gathering more, so
// writes that are not scans cause at most one commit per liveDelay however
// many arrive; it stops waiting when a scan arrives: a person is waiting
// for that one.
func (s *Store) fill(batch []*request, last time.Time) []*request {
	var wait <-chan time.Time
	if d := time.Until(last.Add(s.liveDelay)); batch[0].fn != nil && d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		wait = t.C
	}
	for len(batch) < s.maxBatch {
		if wait == nil {
			select {
			case r := <-s.reqs:
				batch = append(batch, r)
				continue
			default:
				return batch
			}
		}
		select {
		case r := <-s.reqs:
			batch = append(batch, r)
			if r.fn == nil {
				wait = nil
			}
		case <-wait:
			wait = nil
		case <-s.quit:
			return batch
		}
	}
	return batch
}

// commit runs a batch in one transaction and answers every request in it.
// A request whose own work fails (not the commit) is taken out and the rest
// rerun, as bbolt's Batch does: one bad request never fails its
// batch-mates. The failed ones then run alone, and their error is final.
func (s *Store) commit(batch []*request, solo bool) {
	var alone []*request
	retried := false
	for len(batch) > 0 {
		i, txid, err := s.try(batch)
		if i >= 0 {
			r := batch[i]
			batch = append(batch[:i:i], batch[i+1:]...)
			if solo {
				s.answer(r, err)
			} else {
				alone = append(alone, r)
			}
			continue
		}
		if err != nil {
			if !s.recoverCommit(batch, txid, err, retried) {
				retried = true
				continue
			}
		} else {
			s.committed()
			for _, r := range batch {
				s.finish(r)
			}
		}
		break
	}
	for _, r := range alone {
		s.commit([]*request{r}, true)
	}
}

// answer fails one request with err.
func (s *Store) answer(r *request, err error) {
	s.logLimited("request failed in its own transaction", "err", err)
	if r.fn == nil {
		r.entry, r.err = failed(r.scan, err), fmt.Errorf("record decision: %w", err)
	} else {
		r.err = err
	}
	s.finish(r)
}

// try runs the batch in one write transaction and commits it. It returns
// the index of the request whose own work failed (and its error), or -1
// and the commit's error. txid names the transaction for the read-back.
func (s *Store) try(batch []*request) (failedAt, txid int, err error) {
	tx, err := s.db.Begin(true)
	if err != nil {
		return -1, 0, err
	}
	txid = tx.ID()
	for i, r := range batch {
		if err := s.run(tx, r); err != nil {
			tx.Rollback()
			return i, txid, err
		}
	}
	return -1, txid, commitGuarded(tx)
}

// commitGuarded commits, turning a panic of bbolt (a freelist that a
// damaged or half-written file left inconsistent) into an error, so the
// batch goes through the read-back like any failed commit.
func commitGuarded(tx *bolt.Tx) (err error) {
	path := tx.DB().Path() // a rolled-back tx no longer knows its DB
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			func() { defer func() { recover() }(); tx.Rollback() }()
			err = damaged(path, fmt.Sprintf("commit: %v", r))
		}
	}()
	return tx.Commit()
}

// run does one request's work inside the batch's transaction. A panic of
// bbolt on a damaged page becomes that request's ErrDamaged.
func (s *Store) run(tx *bolt.Tx, r *request) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guard(tx.DB().Path(), &err)
	r.err = nil
	if r.fn != nil {
		return r.fn(tx)
	}
	r.entry, err = s.apply(tx, r.v, r.scan)
	return err
}

func (s *Store) apply(tx *bolt.Tx, v *verify.Verifier, sc Scan) (Decision, error) {
	e := Decision{At: sc.At, Gate: sc.Gate, Scanner: sc.Scanner, Symbology: sc.Symbology, Event: v.Policy().Event}
	res := sc.Pre
	var used *verify.Use
	if ck := sc.Checked; ck != nil {
		c := ck.Credential()
		e.Ticket, e.Serial, e.Kind, e.Zone, e.CodeTime = c.Ticket.String(), c.Serial, ck.Kind().String(), c.Zone, ck.CodeTime()
		res = ck.Result()
		if ck.Passed() {
			var f verify.Facts
			var err error
			if f, err = facts(tx, c.Ticket); err != nil {
				return e, err
			}
			if f.Entry != nil {
				e.Holder = f.Entry.Holder
			}
			res = v.Decide(ck, f)
			used = f.Used
			if ck.Kind() != verify.KindStatic && ck.CodeTime().After(f.LastCode) {
				// The device signature verified: remember the newest code
				// whatever the verdict, so an older one is never taken later.
				if err := tx.Bucket(bCodes).Put(c.Ticket[:], binary.BigEndian.AppendUint64(nil, uint64(ck.CodeTime().Unix()))); err != nil {
					return e, err
				}
			}
		}
	} else if t := sc.Token; t != nil {
		c := &t.Credential
		e.Ticket, e.Serial, e.Kind, e.Zone, e.CodeTime = c.Ticket.String(), c.Serial, t.Kind.String(), c.Zone, t.CodeTime
	}
	if res.Reason == "" || res.Reason == verify.ReasonPassed {
		// Only Decide admits a token, and only Check makes one Decide takes.
		res = verify.Result{Reason: verify.ReasonMalformed, Detail: "scan was never checked"}
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
		id, _ := sc.ticket()
		if err := tx.Bucket(bUsed).Put(id[:], u); err != nil {
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
// in order. fn must not keep the decision's slices beyond the call.
func (s *Store) Journal(from uint64, fn func(Decision) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bJournal).Cursor()
		for k, v := c.Seek(binary.BigEndian.AppendUint64(nil, from)); k != nil; k, v = c.Next() {
			var e Decision
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
