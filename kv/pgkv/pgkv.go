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
	"time"

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
	d := &DB{pool: pool, o: o, table: pgx.Identifier{o.Table}.Sanitize()}
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
	ptx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return retryable(err), fmt.Errorf("pgkv: begin: %w", err)
	}
	defer rollback(ctx, ptx) // after a commit, does nothing
	t := &tx{ctx: ctx, d: d, tx: ptx, write: true}
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
	if err := ptx.Commit(ctx); err != nil {
		return retryable(err), fmt.Errorf("pgkv: commit: %w", err)
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
	ptx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("pgkv: begin: %w", err)
	}
	defer rollback(ctx, ptx)
	t := &tx{ctx: ctx, d: d, tx: ptx}
	ferr := fn(t)
	t.done = true
	if ferr != nil {
		return ferr
	}
	return t.err
}

// rollback ends a transaction that did not commit. It gets its own few
// seconds, so that a connection whose call was cancelled can still be
// cleaned and reused rather than dropped.
func rollback(ctx context.Context, ptx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	ptx.Rollback(ctx)
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

// tx is a kv.Tx on a PostgreSQL transaction.
type tx struct {
	ctx   context.Context
	d     *DB
	tx    pgx.Tx
	write bool
	// absent holds the keys (bucket NUL key) that Get found absent and
	// that this transaction has not itself inserted since.
	absent map[string]struct{}
	// err is the first failure of a statement: the server has aborted the
	// transaction, and every later call returns it.
	err  error
	done bool
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
	t.err = err
	return err
}

// lock is the locking clause of reads.
func (t *tx) lock() string {
	if t.write {
		return " FOR UPDATE"
	}
	return ""
}

// Get implements kv.Tx.
func (t *tx) Get(bucket string, key []byte) ([]byte, error) {
	if err := t.usable(); err != nil {
		return nil, err
	}
	if key == nil {
		key = []byte{}
	}
	var v []byte
	err := t.tx.QueryRow(t.ctx, `SELECT v FROM `+t.d.table+` WHERE bucket = $1 AND k = $2`+t.lock(), bucket, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		if t.write {
			if t.absent == nil {
				t.absent = map[string]struct{}{}
			}
			t.absent[absentKey(bucket, key)] = struct{}{}
		}
		return nil, nil
	}
	if err != nil {
		return nil, t.fail("get", err)
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

// Put implements kv.Tx.
func (t *tx) Put(bucket string, key, value []byte) error {
	if !t.write {
		return kv.ErrReadOnly
	}
	if err := t.usable(); err != nil {
		return err
	}
	if key == nil {
		key = []byte{}
	}
	if value == nil {
		value = []byte{}
	}
	ak := absentKey(bucket, key)
	if _, ok := t.absent[ak]; ok {
		// Read as absent: it must still be, or fn decided on a stale read.
		_, err := t.tx.Exec(t.ctx, `INSERT INTO `+t.d.table+` (bucket, k, v) VALUES ($1, $2, $3)`, bucket, key, value)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" { // unique_violation
			return t.fail("", &conflictError{bucket: bucket, key: bytes.Clone(key), err: err})
		}
		if err != nil {
			return t.fail("put", err)
		}
		delete(t.absent, ak) // now this transaction's own row
		return nil
	}
	_, err := t.tx.Exec(t.ctx, `INSERT INTO `+t.d.table+` (bucket, k, v) VALUES ($1, $2, $3)
		ON CONFLICT (bucket, k) DO UPDATE SET v = EXCLUDED.v`, bucket, key, value)
	if err != nil {
		return t.fail("put", err)
	}
	return nil
}

// Delete implements kv.Tx.
func (t *tx) Delete(bucket string, key []byte) error {
	if !t.write {
		return kv.ErrReadOnly
	}
	if err := t.usable(); err != nil {
		return err
	}
	if key == nil {
		key = []byte{}
	}
	if _, err := t.tx.Exec(t.ctx, `DELETE FROM `+t.d.table+` WHERE bucket = $1 AND k = $2`, bucket, key); err != nil {
		return t.fail("delete", err)
	}
	return nil
}

// Scan pages: small first, since scans are often stopped early and a
// page is locked whole, then larger.
const (
	firstPage = 100
	maxPage   = 1000
)

// Scan implements kv.Tx.
func (t *tx) Scan(bucket string, from, to []byte, fn func(k, v []byte) error) error {
	if err := t.usable(); err != nil {
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
		rows, err := t.tx.Query(t.ctx, q, args...)
		if err != nil {
			return t.fail("scan", err)
		}
		var ks, vs [][]byte
		for rows.Next() {
			var k, v []byte
			if err := rows.Scan(&k, &v); err != nil {
				rows.Close()
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
