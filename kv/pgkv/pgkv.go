// Package pgkv is the kv store in a PostgreSQL table, for books that
// several gatesync instances share or that must outlive one machine.
//
// # Layout
//
// Every bucket is in one table (gatesync_kv unless Options.Table says
// otherwise):
//
//	bucket text COLLATE "C" NOT NULL, k bytea NOT NULL, v bytea NOT NULL,
//	PRIMARY KEY (bucket, k)
//
// bytea compares bytewise, shorter first on a common prefix, which is
// bbolt's order, so a scan of (bucket, k) in index order is a bbolt
// cursor's walk. The bucket column is only ever compared for equality;
// the "C" collation keeps its index independent of the operating system's
// locale library, whose upgrades can silently reorder text indexes. The
// table is created by Open under an advisory lock, so instances may start
// together, in the first schema of the connection's search_path (add
// search_path=SCHEMA to the URL to keep stores apart).
//
// # Read-write transactions
//
// Update and Batch (the same thing here: PostgreSQL has no commit to share)
// run fn in a READ COMMITTED transaction in which every read locks what it
// finds: Get is SELECT ... FOR UPDATE, Scan is SELECT ... ORDER BY k FOR
// UPDATE. A transaction that reads a row another is writing waits for that
// one to commit, then reads the new value: buyers of one ticket type
// queue on its stock row and each sees the stock the one before left. That
// is why not SERIALIZABLE: it would let them all read the same stock, then
// fail all but one at commit, so that under load most of the work is done
// again and again. Here a failure is the exception.
//
// Locks cannot cover a key that is not there. A key Get reads as absent is
// remembered, and a Put of it is a plain INSERT: if another transaction
// created the key meanwhile, the INSERT fails with unique_violation (or the
// key shows up in a later read), and the whole function is run again in a
// new transaction, where it reads the key as it now is. Any other Put is an
// upsert (INSERT ... ON CONFLICT DO UPDATE), Delete a DELETE. Scan has no
// such guard: a key created meanwhile inside a scanned range is not seen,
// as kv.Tx says.
//
// # Round trips
//
// A transaction costs round trips, and one that holds a hot row (a tier's
// stock) holds it for every round trip after its read. So BEGIN travels
// with the first statement, and Put and Delete are not sent when called:
// they wait, in order, and go in one pipelined batch with COMMIT (or with
// the next Scan, which must see them); a Get of a key the transaction
// wrote is answered from what it wrote. A sales order (two reads, five
// writes) is three round trips instead of nine. A write the server refuses
// (a key over the index limit, an INSERT of a key created meanwhile) is
// therefore reported by the commit, not by the Put; bucket names are
// checked when called.
//
// The function is also run again on serialization failure (40001) and
// deadlock (40P01), after a short random pause that grows with each
// attempt, at most Options.MaxAttempts times and within Options.Timeout.
// An error of the function's own ends the transaction at once: it is
// rolled back and returned unchanged.
//
// Scans read rows a page at a time into memory before calling their
// function (a connection cannot run another query while a result is being
// read), so the function may Get and Put as it goes; a page is locked as a
// whole, so a scan stopped early may have locked up to a page more than
// its function saw.
//
// # Views
//
// View runs fn in a REPEATABLE READ READ ONLY transaction: one snapshot,
// no locks, never run twice. Put and Delete in it return kv.ErrReadOnly
// without reaching the server.
package pgkv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gated-dev/gated/kv"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultTable is the table of a store whose Options name none.
const DefaultTable = "gatesync_kv"

// Options tune the store; the zero value is the default.
type Options struct {
	// Table is the table the store is kept in (default DefaultTable): a
	// plain SQL identifier of lower-case letters, digits and underscores.
	Table string
	// Timeout bounds each Update, Batch or View, its retries included
	// (default 30s).
	Timeout time.Duration
	// MaxConns caps the connection pool (default: pgxpool's, 4 or the
	// number of CPUs).
	MaxConns int32
	// MaxAttempts is how many times Update and Batch run a function whose
	// transaction lost a race before they give up (default 20).
	MaxAttempts int
}

// DB is a kv.DB in a PostgreSQL table. It is safe for concurrent use, by
// goroutines and by other processes on the same table.
type DB struct {
	pool  *pgxpool.Pool
	o     Options
	table string // quoted
	// the statements of pending writes
	qInsert, qUpsert, qDelete string
}

var _ kv.DB = (*DB)(nil)

var identifier = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// Open connects to the database at url (postgres://...), creates the table
// if it is not there and returns the store.
func Open(ctx context.Context, url string, o Options) (*DB, error) {
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if !identifier.MatchString(o.Table) || len(o.Table) > 63 {
		return nil, fmt.Errorf("pgkv: table name %q: want lower-case letters, digits and _, not starting with a digit, at most 63 bytes", o.Table)
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 20
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("pgkv: postgres URL: %w", err)
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgkv: postgres: %w", err)
	}
	table := pgx.Identifier{o.Table}.Sanitize()
	d := &DB{pool: pool, o: o, table: table,
		qInsert: `INSERT INTO ` + table + ` (bucket, k, v) VALUES ($1, $2, $3)`,
		qUpsert: `INSERT INTO ` + table + ` (bucket, k, v) VALUES ($1, $2, $3) ON CONFLICT (bucket, k) DO UPDATE SET v = EXCLUDED.v`,
		qDelete: `DELETE FROM ` + table + ` WHERE bucket = $1 AND k = $2`}
	if err := d.create(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return d, nil
}

// createLock is the advisory lock key under which tables are created
// ("gatesykv" in ASCII).
const createLock = 0x6761746573796b76

func (d *DB) create(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	// CREATE TABLE IF NOT EXISTS is not safe to run concurrently: two may
	// both find no table and one then fails on the catalog's unique index.
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(createLock)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+d.table+` (
			bucket text COLLATE "C" NOT NULL,
			k bytea NOT NULL,
			v bytea NOT NULL,
			PRIMARY KEY (bucket, k))`)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgkv: create table %s: %w", d.o.Table, err)
	}
	return nil
}

// Close closes the connection pool.
func (d *DB) Close() error {
	d.pool.Close()
	return nil
}

// Update implements kv.DB: see the package comment.
func (d *DB) Update(ctx context.Context, fn func(kv.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pgkv: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		again, err := d.attempt(ctx, fn)
		if !again {
			return err
		}
		if attempt >= d.o.MaxAttempts {
			return fmt.Errorf("pgkv: gave up after %d attempts: %w", attempt, err)
		}
		// A few milliseconds, more as attempts go on, at random so that
		// transactions that collided do not collide again.
		pause := time.Duration(1+rand.IntN(min(attempt, 10))) * time.Millisecond
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return fmt.Errorf("pgkv: %w after %d attempts, the last: %w", ctx.Err(), attempt, err)
		}
	}
}

// Batch implements kv.DB. It is Update: concurrent PostgreSQL transactions
// commit in parallel anyway.
func (d *DB) Batch(ctx context.Context, fn func(kv.Tx) error) error {
	return d.Update(ctx, fn)
}

// attempt runs fn once in a transaction of its own. again reports that err
// is a lost race and fn should run again.
func (d *DB) attempt(ctx context.Context, fn func(kv.Tx) error) (again bool, err error) {
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return retryable(err), fmt.Errorf("pgkv: %w", err)
	}
	t := &tx{ctx: ctx, d: d, conn: conn, write: true}
	defer t.end()
	ferr := fn(t)
	t.done = true
	switch {
	case t.err != nil && retryable(t.err):
		// Even if fn did not return it: what fn read was not so.
		return true, t.err
	case ferr != nil:
		return false, ferr
	case t.err != nil:
		// fn went on after a failed statement; the server has aborted the
		// transaction, so committing it would not.
		return false, t.err
	}
	if err := t.commit(); err != nil {
		return retryable(err), err
	}
	return false, nil
}

// View implements kv.DB: fn sees one snapshot of the table.
func (d *DB) View(ctx context.Context, fn func(kv.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pgkv: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("pgkv: %w", err)
	}
	t := &tx{ctx: ctx, d: d, conn: conn}
	defer t.end()
	ferr := fn(t)
	t.done = true
	if ferr != nil {
		return ferr
	}
	if t.err != nil {
		return t.err
	}
	return t.commit()
}

// conflictError is a key found created by another transaction after this
// one read it as absent.
type conflictError struct {
	bucket string
	key    []byte
	err    error // the unique violation, if that is how it showed
}

func (e *conflictError) Error() string {
	s := fmt.Sprintf("pgkv: key %q of bucket %q was created by another transaction after this one read it as absent", e.key, e.bucket)
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *conflictError) Unwrap() error { return e.err }

// retryable reports whether err means that the transaction lost a race (or
// never reached the server), so that its function should run again.
func retryable(err error) bool {
	var c *conflictError
	if errors.As(err, &c) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01" // serialization_failure, deadlock_detected
	}
	return pgconn.SafeToRetry(err)
}

// tx is a kv.Tx on a PostgreSQL transaction, on a connection of its own
// for its life.
//
// Round trips are what a transaction costs here, and a buyer's hold on a
// hot row lasts as many of them as follow its read, so a tx sends as few
// as it can: BEGIN goes with the first statement, writes wait in pending
// (reads of them are answered from buf) and go with COMMIT, or with the
// next Scan, which must see them. An order that reads two keys and writes
// five is three round trips: BEGIN+read, read, writes+COMMIT.
type tx struct {
	ctx   context.Context
	d     *DB
	conn  *pgxpool.Conn
	write bool
	// begun: BEGIN has been sent; committed: COMMIT has succeeded.
	begun, committed bool
	// pending are writes not yet sent, in order; buf is the value each
	// pending write leaves (nil for a delete), by absentKey.
	pending []write
	buf     map[string][]byte
	// absent holds the keys (bucket NUL key) that Get found absent and
	// that this transaction has not itself written since.
	absent map[string]struct{}
	// err is the first failure of a statement: the server has aborted the
	// transaction, and every later call returns it.
	err  error
	done bool
}

// write is a pending Put or Delete. insert marks a Put of a key read as
// absent: a plain INSERT, which fails if the key was created meanwhile.
type write struct {
	del, insert bool
	bucket      string
	key, value  []byte
}

func absentKey(bucket string, key []byte) string {
	return bucket + "\x00" + string(key) // a text bucket has no NUL
}

// usable returns why the transaction cannot be used any more, if it
// cannot.
func (t *tx) usable() error {
	if t.done {
		return errors.New("pgkv: transaction used after its function returned")
	}
	return t.err
}

// fail records the failure of a statement and returns it.
func (t *tx) fail(op string, err error) error {
	var c *conflictError
	if !errors.As(err, &c) {
		err = fmt.Errorf("pgkv: %s: %w", op, err)
	}
	if t.err == nil {
		t.err = err
	}
	return err
}

func (t *tx) beginSQL() string {
	if t.write {
		return "BEGIN ISOLATION LEVEL READ COMMITTED"
	}
	return "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
}

// exchange makes one round trip: BEGIN if the transaction has not begun,
// the pending writes if flush is set, then the statements queue adds,
// whose results read takes.
func (t *tx) exchange(flush bool, queue func(*pgx.Batch), read func(pgx.BatchResults) error) error {
	b := &pgx.Batch{}
	begin := !t.begun
	if begin {
		b.Queue(t.beginSQL())
	}
	var ws []write
	if flush {
		ws = t.pending
		for _, w := range ws {
			switch {
			case w.del:
				b.Queue(t.d.qDelete, w.bucket, w.key)
			case w.insert:
				b.Queue(t.d.qInsert, w.bucket, w.key, w.value)
			default:
				b.Queue(t.d.qUpsert, w.bucket, w.key, w.value)
			}
		}
	}
	if queue != nil {
		queue(b)
	}
	if b.Len() == 0 {
		return nil
	}
	// From here the connection may hold an open transaction: end rolls it
	// back unless it committed.
	t.begun = true
	br := t.conn.SendBatch(t.ctx, b)
	err := func() error {
		if begin {
			if _, err := br.Exec(); err != nil {
				return t.fail("begin", err)
			}
		}
		for _, w := range ws {
			if _, err := br.Exec(); err != nil {
				return t.writeFailed(w, err)
			}
		}
		if flush {
			t.pending, t.buf = nil, nil
		}
		if read != nil {
			return read(br)
		}
		return nil
	}()
	if cerr := br.Close(); err == nil && cerr != nil {
		err = t.fail("batch", cerr)
	}
	return err
}

// writeFailed records the failure of a pending write.
func (t *tx) writeFailed(w write, err error) error {
	var pe *pgconn.PgError
	if w.insert && errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
		// Read as absent, created meanwhile: fn decided on a stale read.
		return t.fail("", &conflictError{bucket: w.bucket, key: bytes.Clone(w.key), err: err})
	}
	if w.del {
		return t.fail("delete", err)
	}
	return t.fail("put", err)
}

// commit sends the pending writes and COMMIT in one round trip. A
// transaction that sent nothing has nothing to commit.
func (t *tx) commit() error {
	if !t.begun && len(t.pending) == 0 {
		return nil
	}
	err := t.exchange(true, func(b *pgx.Batch) { b.Queue("COMMIT") }, func(br pgx.BatchResults) error {
		tag, err := br.Exec()
		if err != nil {
			return t.fail("commit", err)
		}
		if tag.String() == "ROLLBACK" {
			return t.fail("commit", errors.New("the server rolled the transaction back"))
		}
		t.committed = true
		return nil
	})
	return err
}

// end rolls back a transaction that began and did not commit, and gives
// the connection back. The rollback gets its own few seconds, so that a
// connection whose call was cancelled can still be cleaned and reused; one
// that cannot be is closed by the pool, which never reuses a connection
// left inside a transaction.
func (t *tx) end() {
	if t.begun && !t.committed && !t.conn.Conn().IsClosed() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), 5*time.Second)
		t.conn.Exec(ctx, "ROLLBACK")
		cancel()
	}
	t.conn.Release()
}

// lock is the locking clause of reads.
func (t *tx) lock() string {
	if t.write {
		return " FOR UPDATE"
	}
	return ""
}

// checkBucket refuses a bucket name PostgreSQL's text cannot hold, before
// anything is sent, so the failure points at the call that made it.
func (t *tx) checkBucket(bucket string) error {
	if strings.IndexByte(bucket, 0) >= 0 || !utf8.ValidString(bucket) {
		return t.fail("", fmt.Errorf("pgkv: bucket name %q: want valid UTF-8 without NUL", bucket))
	}
	return nil
}

// Get implements kv.Tx.
func (t *tx) Get(bucket string, key []byte) ([]byte, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if err := t.checkBucket(bucket); err != nil {
		return nil, err
	}
	if key == nil {
		key = []byte{}
	}
	if v, ok := t.buf[absentKey(bucket, key)]; ok {
		return bytes.Clone(v), nil // this transaction's own write, not yet sent
	}
	var v []byte
	var found bool
	err := t.exchange(false, func(b *pgx.Batch) {
		b.Queue(`SELECT v FROM `+t.d.table+` WHERE bucket = $1 AND k = $2`+t.lock(), bucket, key)
	}, func(br pgx.BatchResults) error {
		err := br.QueryRow().Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return t.fail("get", err)
		}
		found = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !found {
		if t.write {
			if t.absent == nil {
				t.absent = map[string]struct{}{}
			}
			t.absent[absentKey(bucket, key)] = struct{}{}
		}
		return nil, nil
	}
	if err := t.appeared(bucket, key); err != nil {
		return nil, err
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

// appeared fails the transaction if key, found now, was read as absent
// before.
func (t *tx) appeared(bucket string, key []byte) error {
	if len(t.absent) == 0 {
		return nil
	}
	if _, ok := t.absent[absentKey(bucket, key)]; ok {
		return t.fail("", &conflictError{bucket: bucket, key: bytes.Clone(key)})
	}
	return nil
}

// Put implements kv.Tx: the write waits for the commit (or the next Scan).
func (t *tx) Put(bucket string, key, value []byte) error {
	if err := t.writable(bucket); err != nil {
		return err
	}
	value = append([]byte{}, value...) // the caller may reuse it; nil is stored empty
	w := write{bucket: bucket, key: append([]byte{}, key...), value: value}
	ak := absentKey(bucket, key)
	if _, ok := t.absent[ak]; ok {
		// Read as absent: it must still be when the INSERT runs.
		w.insert = true
		delete(t.absent, ak) // from now on this transaction's own key
	}
	t.queue(ak, w, value)
	return nil
}

// Delete implements kv.Tx: the write waits for the commit (or the next
// Scan).
func (t *tx) Delete(bucket string, key []byte) error {
	if err := t.writable(bucket); err != nil {
		return err
	}
	t.queue(absentKey(bucket, key), write{del: true, bucket: bucket, key: append([]byte{}, key...)}, nil)
	return nil
}

// writable returns why bucket cannot be written in this transaction, if
// it cannot.
func (t *tx) writable(bucket string) error {
	if !t.write {
		return kv.ErrReadOnly
	}
	if err := t.usable(); err != nil {
		return err
	}
	return t.checkBucket(bucket)
}

func (t *tx) queue(ak string, w write, leaves []byte) {
	t.pending = append(t.pending, w)
	if t.buf == nil {
		t.buf = map[string][]byte{}
	}
	t.buf[ak] = leaves
}

// Scan pages: small first, since scans are often stopped early and a
// page is locked whole, then larger.
const (
	firstPage = 100
	maxPage   = 1000
)

// Scan implements kv.Tx. Pending writes go with the first page's query,
// so the scan sees them.
func (t *tx) Scan(bucket string, from, to []byte, fn func(k, v []byte) error) error {
	if err := t.usable(); err != nil {
		return err
	}
	if err := t.checkBucket(bucket); err != nil {
		return err
	}
	if from == nil {
		from = []byte{}
	}
	if to != nil && bytes.Compare(from, to) >= 0 {
		return nil
	}
	cmp := ">=" // from is in the range; after the first page, from is the last key seen
	page := firstPage
	for {
		q := `SELECT k, v FROM ` + t.d.table + ` WHERE bucket = $1 AND k ` + cmp + ` $2`
		args := []any{bucket, from}
		if to != nil {
			q += ` AND k < $3`
			args = append(args, to)
		}
		q += fmt.Sprintf(` ORDER BY k LIMIT %d`, page) + t.lock()
		var ks, vs [][]byte
		err := t.exchange(true, func(b *pgx.Batch) { b.Queue(q, args...) }, func(br pgx.BatchResults) error {
			rows, err := br.Query()
			if err != nil {
				return t.fail("scan", err)
			}
			defer rows.Close()
			for rows.Next() {
				var k, v []byte
				if err := rows.Scan(&k, &v); err != nil {
					return t.fail("scan", err)
				}
				if v == nil {
					v = []byte{}
				}
				ks, vs = append(ks, k), append(vs, v)
			}
			if err := rows.Err(); err != nil {
				return t.fail("scan", err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range ks {
			if err := t.appeared(bucket, k); err != nil {
				return err
			}
		}
		for i := range ks {
			if err := fn(ks[i], vs[i]); err != nil {
				if errors.Is(err, kv.Stop) {
					return nil
				}
				return err
			}
		}
		if len(ks) < page {
			return nil
		}
		from, cmp = ks[len(ks)-1], ">"
		page = min(2*page, maxPage)
	}
}
