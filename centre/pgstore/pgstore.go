// Package pgstore keeps the centre's books of gate entries in PostgreSQL,
// so several gatesync instances can share ingest: it implements
// centre.IngestStore with the same exactly-once contract as the bbolt
// store in central.db.
//
// Concurrency: a batch is stored in one READ COMMITTED transaction that
// locks its gate stream's row (batches of one gate instance are stored
// one after the other, whichever gatesync got them), reads what is
// already there, then locks the entry counter row for the short write
// phase: record numbers are handed out and committed in the same order,
// so a reader paging by N never skips a record committed later. Unique
// constraints on (gate, instance, seq) and on the entry id back the
// checks up; a duplicate id that slips through (another stream racing
// with the same id) is skipped by ON CONFLICT DO NOTHING.
//
// The schema is created and migrated by Open, under an advisory lock, so
// instances may start together. Tables live in the connection's
// search_path (add search_path=SCHEMA to the URL to keep them apart).
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options tune the store; the zero value is the default.
type Options struct {
	// Timeout bounds each operation, retries included (default 30s).
	Timeout time.Duration
	// MaxConns caps the connection pool (default: pgxpool's, 4 or the
	// number of CPUs).
	MaxConns int32
}

// Store is a centre.IngestStore in PostgreSQL. It is safe for concurrent
// use, by goroutines and by other processes on the same database.
type Store struct {
	pool *pgxpool.Pool
	o    Options
}

var (
	_ centre.IngestStore = (*Store)(nil)
	_ centre.ReentryBook = (*Store)(nil)
	_ centre.TrustBook   = (*Store)(nil)
)

// Open connects to the database at url (postgres://...), creates or
// migrates the schema and returns the store.
func Open(ctx context.Context, url string, o Options) (*Store, error) {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres URL: %w", err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{pool: pool, o: o}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// migrations are applied in order; version i+1 is migrations[i]. Never
// edit one that has shipped: add another.
var migrations = []string{`
CREATE TABLE ingest_counters (name text PRIMARY KEY, value bigint NOT NULL);
INSERT INTO ingest_counters VALUES ('entries', 0);
CREATE TABLE streams (
	gate text NOT NULL, instance text NOT NULL, stored_to bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (gate, instance));
CREATE TABLE entries (
	n bigint PRIMARY KEY,
	venue text NOT NULL, gate text NOT NULL, instance text NOT NULL, seq bigint NOT NULL,
	id text NOT NULL UNIQUE,
	received_at timestamptz NOT NULL, clock_offset_ms bigint NOT NULL,
	entry json NOT NULL,
	UNIQUE (gate, instance, seq));
CREATE TABLE uses (ticket bytea PRIMARY KEY, first json NOT NULL);
CREATE TABLE conflicts (n bigserial PRIMARY KEY, doc json NOT NULL);
CREATE TABLE gates (venue text NOT NULL, gate text NOT NULL, state json NOT NULL, PRIMARY KEY (venue, gate));
`, `
CREATE TABLE reentry_tickets (ticket bytea PRIMARY KEY);
`, `
CREATE TABLE use_heads (event text PRIMARY KEY, head bigint NOT NULL);
CREATE TABLE use_log (event text NOT NULL, n bigint NOT NULL, doc json NOT NULL, PRIMARY KEY (event, n));
CREATE TABLE alerts (n bigserial PRIMARY KEY, doc json NOT NULL);
CREATE TABLE shared_trust (id int PRIMARY KEY, version bigint NOT NULL, doc json NOT NULL);
`}

// migrateLock is the advisory lock key of migrations ("gatesync" in ASCII).
const migrateLock = 0x6761746573796e63

func (s *Store) migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS gatesync_schema (
			version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var have int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM gatesync_schema`).Scan(&have); err != nil {
			return err
		}
		if have > len(migrations) {
			return fmt.Errorf("the database has schema version %d; this gatesync knows up to %d: upgrade gatesync", have, len(migrations))
		}
		for v := have + 1; v <= len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return fmt.Errorf("version %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO gatesync_schema (version) VALUES ($1)`, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres schema: %w", err)
	}
	return nil
}

// inTx runs fn in a transaction, again when PostgreSQL reports a
// serialization failure or deadlock.
func (s *Store) inTx(fn func(ctx context.Context, tx pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.o.Timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return fn(ctx, tx) })
		var pe *pgconn.PgError
		if attempt < 5 && errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01") {
			continue
		}
		return err
	}
}

// Ingest implements centre.IngestStore.
func (s *Store) Ingest(in centre.IngestBatch) (*centre.IngestResult, error) {
	var res *centre.IngestResult
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		var err error
		res, err = ingest(ctx, tx, in)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres ingest: %w", err)
	}
	return res, nil
}

func ingest(ctx context.Context, tx pgx.Tx, in centre.IngestBatch) (*centre.IngestResult, error) {
	b := in.Batch
	res := &centre.IngestResult{}
	if _, err := tx.Exec(ctx, `INSERT INTO streams (gate, instance) VALUES ($1, $2) ON CONFLICT DO NOTHING`, b.Gate, b.Instance); err != nil {
		return nil, err
	}
	var stored int64
	if err := tx.QueryRow(ctx, `SELECT stored_to FROM streams WHERE gate = $1 AND instance = $2 FOR UPDATE`, b.Gate, b.Instance).Scan(&stored); err != nil {
		return nil, err
	}
	storedTo := uint64(stored)
	var seqs []int64
	var ids []string
	for _, e := range b.Parsed {
		if e.Seq > storedTo {
			seqs = append(seqs, int64(e.Seq))
			ids = append(ids, e.ID)
		}
	}
	have := map[string]bool{} // seqs as "s:N" and ids as "i:ID" already in the books
	if len(seqs) > 0 {
		// One index probe an entry (OFFSET 0 keeps the planner from turning
		// the probes into a scan, which it does while the table has no
		// statistics yet, and then every batch reads the whole stream).
		rows, _ := tx.Query(ctx, `SELECT 's:' || e.seq FROM unnest($3::bigint[]) AS q(seq),
				LATERAL (SELECT seq FROM entries WHERE gate = $1 AND instance = $2 AND seq = q.seq OFFSET 0) e
			UNION ALL SELECT 'i:' || e.id FROM unnest($4::text[]) AS q(id),
				LATERAL (SELECT id FROM entries WHERE id = q.id OFFSET 0) e`, b.Gate, b.Instance, seqs, ids)
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			have[k] = true
		}
	}
	var cand []int // indexes into b.Parsed of entries to store
	for i, e := range b.Parsed {
		if e.Seq <= storedTo || have[fmt.Sprint("s:", e.Seq)] || have["i:"+e.ID] {
			res.Duplicate++
			continue
		}
		cand = append(cand, i)
	}
	if len(cand) > 0 {
		if err := storeNew(ctx, tx, in, cand, res); err != nil {
			return nil, err
		}
	}
	// Advance stored_to over what is contiguous, a page at a time: a gap
	// that never fills (a gate whose older entries are elsewhere) costs one
	// row a batch, not a scan of the stream.
	for {
		rows, _ := tx.Query(ctx, `SELECT seq FROM entries WHERE gate = $1 AND instance = $2 AND seq > $3 ORDER BY seq LIMIT 1000`,
			b.Gate, b.Instance, int64(storedTo))
		above, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return nil, err
		}
		from := storedTo
		for _, s := range above {
			if uint64(s) != storedTo+1 {
				break
			}
			storedTo++
		}
		if len(above) < 1000 || storedTo-from < uint64(len(above)) {
			break
		}
	}
	res.StoredTo = storedTo
	if _, err := tx.Exec(ctx, `UPDATE streams SET stored_to = $3 WHERE gate = $1 AND instance = $2`, b.Gate, b.Instance, int64(storedTo)); err != nil {
		return nil, err
	}
	if err := updateGate(ctx, tx, in.Venue, b.Gate, func(g *centre.GateState) { centre.IngestedGate(g, in, res) }); err != nil {
		return nil, err
	}
	if err := putAlerts(ctx, tx, res.Alerts); err != nil {
		return nil, err
	}
	return res, nil
}

func putAlerts(ctx context.Context, tx pgx.Tx, as []centre.Alert) error {
	for i := range as {
		doc, _ := json.Marshal(as[i])
		var n int64
		if err := tx.QueryRow(ctx, `INSERT INTO alerts (doc) VALUES ($1::text::json) RETURNING n`, string(doc)).Scan(&n); err != nil {
			return err
		}
		as[i].N = uint64(n)
	}
	return nil
}

// logUses numbers the batch's new uses in their events' uses logs. The
// head row stays locked until commit, so numbers are committed in order.
func logUses(ctx context.Context, tx pgx.Tx, res *centre.IngestResult) error {
	heads := map[string]uint64{}
	for i := range res.Logged {
		lu := &res.Logged[i]
		head, ok := heads[lu.Event]
		if !ok {
			if _, err := tx.Exec(ctx, `INSERT INTO use_heads VALUES ($1, 0) ON CONFLICT DO NOTHING`, lu.Event); err != nil {
				return err
			}
			var h int64
			if err := tx.QueryRow(ctx, `SELECT head FROM use_heads WHERE event = $1 FOR UPDATE`, lu.Event).Scan(&h); err != nil {
				return err
			}
			head = uint64(h)
		}
		head++
		heads[lu.Event] = head
		lu.N = head
	}
	if len(res.Logged) == 0 {
		return nil
	}
	evs, ns, docs := make([]string, len(res.Logged)), make([]int64, len(res.Logged)), make([]string, len(res.Logged))
	for i, lu := range res.Logged {
		d, _ := json.Marshal(lu.LoggedUse)
		evs[i], ns[i], docs[i] = lu.Event, int64(lu.N), string(d)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO use_log (event, n, doc) SELECT e, n, d::json FROM unnest($1::text[], $2::bigint[], $3::text[]) AS x(e, n, d)`,
		evs, ns, docs); err != nil {
		return err
	}
	for ev, h := range heads {
		if _, err := tx.Exec(ctx, `UPDATE use_heads SET head = $2 WHERE event = $1`, ev, int64(h)); err != nil {
			return err
		}
	}
	return nil
}

// storeNew stores the candidate entries, their uses and conflicts, holding
// the entry counter's row lock until commit.
func storeNew(ctx context.Context, tx pgx.Tx, in centre.IngestBatch, cand []int, res *centre.IngestResult) error {
	b := in.Batch
	var base int64
	if err := tx.QueryRow(ctx, `SELECT value FROM ingest_counters WHERE name = 'entries' FOR UPDATE`).Scan(&base); err != nil {
		return err
	}
	seqs, ids, docs := make([]int64, len(cand)), make([]string, len(cand)), make([]string, len(cand))
	for j, i := range cand {
		seqs[j], ids[j], docs[j] = int64(b.Parsed[i].Seq), b.Parsed[i].ID, string(b.Entries[i])
	}
	rows, _ := tx.Query(ctx, `INSERT INTO entries (n, venue, gate, instance, seq, id, received_at, clock_offset_ms, entry)
		SELECT $1 + o, $2, $3, $4, s, i, $5, $6, e::json FROM unnest($7::bigint[], $8::text[], $9::text[]) WITH ORDINALITY AS x(s, i, e, o)
		ON CONFLICT DO NOTHING RETURNING seq`,
		base, in.Venue, b.Gate, b.Instance, in.At, b.ClockOffsetMs, seqs, ids, docs)
	inserted, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE ingest_counters SET value = $1 WHERE name = 'entries'`, base+int64(len(cand))); err != nil {
		return err
	}
	isNew := map[uint64]bool{}
	for _, s := range inserted {
		isNew[uint64(s)] = true
	}
	res.New = len(inserted)
	res.Duplicate += len(cand) - len(inserted) // an id another stream stored meanwhile
	var tickets [][]byte
	for _, i := range cand {
		if e := b.Parsed[i]; isNew[e.Seq] && e.Verdict == cache.Admit {
			tid, _ := verify.ParseTicketID(e.Ticket) // ParseBatch checked it
			tickets = append(tickets, tid[:])
		}
	}
	if len(tickets) == 0 {
		return nil
	}
	uses := map[verify.TicketID]centre.Admission{}
	rows, _ = tx.Query(ctx, `SELECT u.ticket, u.first::text FROM unnest($1::bytea[]) AS q(t),
		LATERAL (SELECT ticket, first FROM uses WHERE ticket = q.t OFFSET 0) u`, tickets)
	var tk []byte
	var first string
	if _, err := pgx.ForEachRow(rows, []any{&tk, &first}, func() error {
		var a centre.Admission
		if err := json.Unmarshal([]byte(first), &a); err != nil {
			return fmt.Errorf("use record of %x: %w", tk, err)
		}
		uses[verify.TicketID(tk)] = a
		return nil
	}); err != nil {
		return err
	}
	var newTickets [][]byte
	var newUses []string
	for _, i := range cand {
		e := b.Parsed[i]
		if !isNew[e.Seq] || e.Verdict != cache.Admit {
			continue
		}
		tid, _ := verify.ParseTicketID(e.Ticket)
		if a, ok := in.Unproven[e.Seq]; ok {
			res.Alerts = append(res.Alerts, centre.UnprovenAlert(in, e, a))
			continue
		}
		adm := centre.Admission{Venue: in.Venue, Gate: b.Gate, EntryID: e.ID, At: e.At}
		if prev, ok := uses[tid]; ok {
			cf, ok := centre.ConflictOf(in, e, tid, prev, adm)
			if !ok {
				continue
			}
			doc, _ := json.Marshal(cf)
			var n int64
			if err := tx.QueryRow(ctx, `INSERT INTO conflicts (doc) VALUES ($1::text::json) RETURNING n`, string(doc)).Scan(&n); err != nil {
				return err
			}
			cf.N = uint64(n)
			res.Conflicts = append(res.Conflicts, cf)
			continue
		}
		uses[tid] = adm
		doc, _ := json.Marshal(adm)
		newTickets, newUses = append(newTickets, tid[:]), append(newUses, string(doc))
		res.Admitted = append(res.Admitted, adm)
		res.Tickets = append(res.Tickets, tid)
		res.Seqs = append(res.Seqs, e.Seq)
		res.Logged = append(res.Logged, centre.EventUse{Event: e.Event, LoggedUse: wire.LoggedUse{Ticket: tid, Gate: b.Gate,
			At: e.At, Seq: e.Seq, EntryID: e.ID}})
	}
	if len(newTickets) > 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO uses (ticket, first) SELECT t, f::json FROM unnest($1::bytea[], $2::text[]) AS x(t, f)`,
			newTickets, newUses); err != nil {
			return err
		}
	}
	return logUses(ctx, tx, res)
}

// Entries implements centre.IngestStore.
func (s *Store) Entries(since uint64, limit int) ([]centre.Record, error) {
	var out []centre.Record
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		out = nil
		rows, _ := tx.Query(ctx, `SELECT n, venue, gate, id, received_at, clock_offset_ms, entry::text FROM entries
			WHERE n > $1 ORDER BY n LIMIT $2`, int64(since), limit)
		var r centre.Record
		var n int64
		var entry string
		_, err := pgx.ForEachRow(rows, []any{&n, &r.Venue, &r.Gate, &r.ID, &r.ReceivedAt, &r.ClockOffsetMs, &entry}, func() error {
			r.N, r.Entry, r.ReceivedAt = uint64(n), json.RawMessage(entry), r.ReceivedAt.UTC()
			out = append(out, r)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres entries: %w", err)
	}
	return out, nil
}

// Conflicts implements centre.IngestStore.
func (s *Store) Conflicts() ([]centre.Conflict, error) {
	out := []centre.Conflict{}
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		out = out[:0]
		rows, _ := tx.Query(ctx, `SELECT n, doc::text FROM conflicts ORDER BY n`)
		var n int64
		var doc string
		_, err := pgx.ForEachRow(rows, []any{&n, &doc}, func() error {
			var cf centre.Conflict
			if err := json.Unmarshal([]byte(doc), &cf); err != nil {
				return err
			}
			cf.N = uint64(n)
			out = append(out, cf)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres conflicts: %w", err)
	}
	return out, nil
}

// UpdateGate implements centre.IngestStore.
func (s *Store) UpdateGate(venue, gate string, fn func(*centre.GateState)) error {
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error { return updateGate(ctx, tx, venue, gate, fn) })
	if err != nil {
		return fmt.Errorf("postgres gate state: %w", err)
	}
	return nil
}

func updateGate(ctx context.Context, tx pgx.Tx, venue, gate string, fn func(*centre.GateState)) error {
	g := centre.GateState{Venue: venue, Gate: gate}
	zero, _ := json.Marshal(g)
	if _, err := tx.Exec(ctx, `INSERT INTO gates (venue, gate, state) VALUES ($1, $2, $3::text::json) ON CONFLICT DO NOTHING`,
		venue, gate, string(zero)); err != nil {
		return err
	}
	var doc string
	if err := tx.QueryRow(ctx, `SELECT state::text FROM gates WHERE venue = $1 AND gate = $2 FOR UPDATE`, venue, gate).Scan(&doc); err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(doc), &g); err != nil {
		return fmt.Errorf("state of gate %s/%s: %w", venue, gate, err)
	}
	fn(&g)
	v, err := json.Marshal(g)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE gates SET state = $3::text::json WHERE venue = $1 AND gate = $2`, venue, gate, string(v))
	return err
}

// RemoveGate implements centre.GateRemover.
func (s *Store) RemoveGate(venue, gate string) error {
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM gates WHERE venue = $1 AND gate = $2`, venue, gate)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres remove gate: %w", err)
	}
	return nil
}

// Gates implements centre.IngestStore.
func (s *Store) Gates() ([]centre.GateState, error) {
	out := []centre.GateState{}
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		out = out[:0]
		rows, _ := tx.Query(ctx, `SELECT state::text FROM gates ORDER BY venue, gate`)
		var doc string
		_, err := pgx.ForEachRow(rows, []any{&doc}, func() error {
			var g centre.GateState
			if err := json.Unmarshal([]byte(doc), &g); err != nil {
				return err
			}
			out = append(out, g)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres gates: %w", err)
	}
	return out, nil
}

// Uses implements centre.IngestStore.
func (s *Store) Uses(event string, after uint64, limit int) ([]wire.LoggedUse, uint64, error) {
	var out []wire.LoggedUse
	var head int64
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		out, head = nil, 0
		// The head first: the page then ends at or below it, whatever
		// commits meanwhile.
		if err := tx.QueryRow(ctx, `SELECT coalesce((SELECT head FROM use_heads WHERE event = $1), 0)`, event).Scan(&head); err != nil {
			return err
		}
		rows, _ := tx.Query(ctx, `SELECT doc::text FROM use_log WHERE event = $1 AND n > $2 AND n <= $3 ORDER BY n LIMIT $4`,
			event, int64(after), head, limit)
		var doc string
		_, err := pgx.ForEachRow(rows, []any{&doc}, func() error {
			var u wire.LoggedUse
			if err := json.Unmarshal([]byte(doc), &u); err != nil {
				return err
			}
			out = append(out, u)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("postgres uses log: %w", err)
	}
	return out, uint64(head), nil
}

// AddAlerts implements centre.IngestStore.
func (s *Store) AddAlerts(as []centre.Alert) error {
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error { return putAlerts(ctx, tx, as) })
	if err != nil {
		return fmt.Errorf("postgres alerts: %w", err)
	}
	return nil
}

// Alerts implements centre.IngestStore.
func (s *Store) Alerts(since uint64, limit int) ([]centre.Alert, error) {
	out := []centre.Alert{}
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		out = out[:0]
		rows, _ := tx.Query(ctx, `SELECT n, doc::text FROM alerts WHERE n > $1 ORDER BY n LIMIT $2`, int64(since), limit)
		var n int64
		var doc string
		_, err := pgx.ForEachRow(rows, []any{&n, &doc}, func() error {
			var a centre.Alert
			if err := json.Unmarshal([]byte(doc), &a); err != nil {
				return err
			}
			a.N = uint64(n)
			out = append(out, a)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres alerts: %w", err)
	}
	return out, nil
}

// NoteTrust implements centre.TrustBook.
func (s *Store) NoteTrust(env *verify.Envelope, version uint64) error {
	doc, err := json.Marshal(env)
	if err != nil {
		return err
	}
	err = s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO shared_trust VALUES (1, $1, $2::text::json)
			ON CONFLICT (id) DO UPDATE SET version = excluded.version, doc = excluded.doc WHERE shared_trust.version <= excluded.version`,
			int64(version), string(doc))
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres trust list: %w", err)
	}
	return nil
}

// SharedTrust implements centre.TrustBook.
func (s *Store) SharedTrust() (*verify.Envelope, error) {
	var env *verify.Envelope
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		var doc string
		err := tx.QueryRow(ctx, `SELECT doc::text FROM shared_trust WHERE id = 1`).Scan(&doc)
		if errors.Is(err, pgx.ErrNoRows) {
			env = nil
			return nil
		}
		if err != nil {
			return err
		}
		env = new(verify.Envelope)
		return json.Unmarshal([]byte(doc), env)
	})
	if err != nil {
		return nil, fmt.Errorf("postgres trust list: %w", err)
	}
	return env, nil
}

// NoteReentry implements centre.ReentryBook.
func (s *Store) NoteReentry(ids []verify.TicketID) error {
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO reentry_tickets (ticket) SELECT unnest($1::bytea[]) ON CONFLICT DO NOTHING`, ticketBytes(ids))
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres re-entry tickets: %w", err)
	}
	return nil
}

// Reentry implements centre.ReentryBook.
func (s *Store) Reentry(ids []verify.TicketID) (map[verify.TicketID]bool, error) {
	out := map[verify.TicketID]bool{}
	err := s.inTx(func(ctx context.Context, tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT r.ticket FROM unnest($1::bytea[]) AS q(t),
			LATERAL (SELECT ticket FROM reentry_tickets WHERE ticket = q.t OFFSET 0) r`, ticketBytes(ids))
		var tk []byte
		_, err := pgx.ForEachRow(rows, []any{&tk}, func() error {
			if len(tk) == len(verify.TicketID{}) {
				out[verify.TicketID(tk)] = true
			}
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres re-entry tickets: %w", err)
	}
	return out, nil
}

func ticketBytes(ids []verify.TicketID) [][]byte {
	out := make([][]byte, len(ids))
	for i := range ids {
		out[i] = ids[i][:]
	}
	return out
}
