package pgkv_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gated-dev/gated/internal/pgtest"
	"github.com/gated-dev/gated/kv"
	"github.com/gated-dev/gated/kv/kvtest"
	"github.com/gated-dev/gated/kv/pgkv"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var tables atomic.Int32

// newTable is a name no other test has used.
func newTable() string { return fmt.Sprintf("kv_%d", tables.Add(1)) }

func open(t testing.TB, dsn string, o pgkv.Options) *pgkv.DB {
	t.Helper()
	db, err := pgkv.Open(context.Background(), dsn, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestPostgres runs on one throwaway cluster: the conformance suite, each
// of its stores in a table of its own, then what is particular to
// PostgreSQL.
func TestPostgres(t *testing.T) {
	cl := pgtest.Start(t, pgtest.Options{})
	t.Run("Conformance", func(t *testing.T) {
		kvtest.Run(t, func(t *testing.T) kv.DB { return open(t, cl.DSN, pgkv.Options{Table: newTable()}) })
	})
	t.Run("TwoInstances", func(t *testing.T) { testTwoInstances(t, cl.DSN) })
	t.Run("Open", func(t *testing.T) { testOpen(t, cl) })
	t.Run("Retry", func(t *testing.T) { testRetry(t, cl.DSN) })
	t.Run("FunctionError", func(t *testing.T) { testFunctionError(t, cl.DSN) })
	t.Run("SwallowedError", func(t *testing.T) { testSwallowedError(t, cl.DSN) })
	t.Run("Timeout", func(t *testing.T) { testTimeout(t, cl.DSN) })
	t.Run("NilValue", func(t *testing.T) { testNilValue(t, cl.DSN) })
	t.Run("RollbackAfterFlush", func(t *testing.T) { testRollbackAfterFlush(t, cl.DSN) })
}

// testRollbackAfterFlush: writes a Scan sent to the server ahead of the
// commit are rolled back when the function then fails, and the
// connection, left inside a transaction, is cleaned for the next one.
func testRollbackAfterFlush(t *testing.T, dsn string) {
	db := open(t, dsn, pgkv.Options{Table: newTable(), MaxConns: 1})
	errBoom := errors.New("boom")
	err := db.Update(t.Context(), func(tx kv.Tx) error {
		if err := tx.Put("b", []byte("k"), []byte("v")); err != nil {
			return err
		}
		n := 0
		if err := tx.Scan("b", nil, nil, func(k, v []byte) error { n++; return nil }); err != nil || n != 1 {
			t.Errorf("scan after a Put saw %d keys (err %v); want the pending write", n, err)
		}
		return errBoom
	})
	if err != errBoom {
		t.Fatalf("Update = %v; want the function's error", err)
	}
	// One connection: the next transactions run on the same one.
	for i := range 3 {
		err = db.Update(t.Context(), func(tx kv.Tx) error {
			v, err := tx.Get("b", []byte("k"))
			if v != nil {
				t.Errorf("run %d: the write of the failed transaction is there: %q", i, v)
			}
			if err != nil {
				return err
			}
			return tx.Put("b", []byte("other"), []byte{byte(i)})
		})
		if err != nil {
			t.Fatalf("Update %d after a rolled-back flush: %v", i, err)
		}
	}
}

// testTwoInstances has two pools on one table, as two gatesync instances
// sharing a database: each sees the other's writes, and buyers spread
// over both do not oversell.
func testTwoInstances(t *testing.T, dsn string) {
	table := newTable()
	a := open(t, dsn, pgkv.Options{Table: table})
	b := open(t, dsn, pgkv.Options{Table: table})
	ctx := t.Context()
	if err := a.Update(ctx, func(tx kv.Tx) error { return tx.Put("x", []byte("k"), []byte("from a")) }); err != nil {
		t.Fatal(err)
	}
	err := b.Update(ctx, func(tx kv.Tx) error {
		v, err := tx.Get("x", []byte("k"))
		if err != nil {
			return err
		}
		if string(v) != "from a" {
			t.Errorf("b read %q; want a's write", v)
		}
		return tx.Put("x", []byte("k2"), []byte("from b"))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = a.View(ctx, func(tx kv.Tx) error {
		v, err := tx.Get("x", []byte("k2"))
		if string(v) != "from b" {
			t.Errorf("a read %q; want b's write", v)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	const stock, buyers = 50, 200
	if err := a.Update(ctx, func(tx kv.Tx) error { return tx.Put("stock", []byte("item"), []byte(strconv.Itoa(stock))) }); err != nil {
		t.Fatal(err)
	}
	sold := make([]bool, buyers)
	var wg sync.WaitGroup
	for i := range buyers {
		db := []*pgkv.DB{a, b}[i%2]
		wg.Go(func() {
			err := db.Update(ctx, func(tx kv.Tx) error {
				sold[i] = false
				v, err := tx.Get("stock", []byte("item"))
				if err != nil {
					return err
				}
				n, err := strconv.Atoi(string(v))
				if err != nil || n <= 0 {
					return err
				}
				if err := tx.Put("stock", []byte("item"), []byte(strconv.Itoa(n-1))); err != nil {
					return err
				}
				sold[i] = true
				return tx.Put("sales", fmt.Appendf(nil, "%03d", i), nil)
			})
			if err != nil {
				t.Errorf("buyer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	n, told := 0, 0
	err = b.View(ctx, func(tx kv.Tx) error {
		n = 0
		return tx.Scan("sales", nil, nil, func(k, v []byte) error { n++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sold {
		if s {
			told++
		}
	}
	if n != stock || told != stock {
		t.Errorf("%d sales recorded, %d buyers told they bought; want %d", n, told, stock)
	}
}

func testOpen(t *testing.T, cl *pgtest.Cluster) {
	ctx := t.Context()
	// The default table.
	db := open(t, cl.DSN, pgkv.Options{})
	if err := db.Update(ctx, func(tx kv.Tx) error { return tx.Put("b", []byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, cl.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM gatesync_kv WHERE bucket = 'b'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("rows of bucket b in gatesync_kv: %d, %v; want 1", n, err)
	}

	// Several instances opening a new table at once.
	table := newTable()
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			db, err := pgkv.Open(ctx, cl.DSN, pgkv.Options{Table: table})
			if err == nil {
				db.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Open: %v", err)
		}
	}

	// A reserved word is a table name like another.
	open(t, cl.DSN, pgkv.Options{Table: "select"})

	// Names that are not plain identifiers are refused before connecting.
	for _, name := range []string{"kv-1", "1kv", "Kv", "kv;drop table x", `kv"`, "public.kv", "kv 1", strings.Repeat("k", 64)} {
		_, err := pgkv.Open(ctx, "postgres://nowhere.invalid/db", pgkv.Options{Table: name})
		if err == nil || !strings.Contains(err.Error(), "table name") {
			t.Errorf("Open with table %q = %v; want the name refused", name, err)
		}
	}
}

// conflictOnce runs, in db, a transaction that reads key k as absent, lets
// another transaction create it, then creates it too. It returns how many
// times its function ran and the error of the transaction.
func conflictOnce(t *testing.T, db *pgkv.DB, k string) (runs int, err error) {
	err = db.Update(t.Context(), func(tx kv.Tx) error {
		runs++
		v, err := tx.Get("c", []byte(k))
		if err != nil || v != nil {
			return err
		}
		if runs == 1 {
			// Another instance creates the key meanwhile.
			err := db.Update(t.Context(), func(tx kv.Tx) error { return tx.Put("c", []byte(k), []byte("other")) })
			if err != nil {
				t.Errorf("the other transaction: %v", err)
			}
		}
		return tx.Put("c", []byte(k), []byte("mine"))
	})
	return runs, err
}

func testRetry(t *testing.T, dsn string) {
	db := open(t, dsn, pgkv.Options{Table: newTable()})
	runs, err := conflictOnce(t, db, "k1")
	if err != nil || runs != 2 {
		t.Errorf("Update = %v after %d runs; want success on the second", err, runs)
	}
	err = db.View(t.Context(), func(tx kv.Tx) error {
		v, err := tx.Get("c", []byte("k1"))
		if string(v) != "other" {
			t.Errorf("k1 = %q; want the other transaction's, which the second run found", v)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// The same with one attempt allowed.
	once := open(t, dsn, pgkv.Options{Table: newTable(), MaxAttempts: 1})
	runs, err = conflictOnce(t, once, "k2")
	var pe *pgconn.PgError
	if runs != 1 || err == nil || !strings.Contains(err.Error(), "gave up after 1 attempts") || !errors.As(err, &pe) || pe.Code != "23505" {
		t.Errorf("Update = %v after %d runs; want it to give up after 1, wrapping the unique violation", err, runs)
	}

	// A Get that finds a key it read as absent before is a conflict too.
	runs = 0
	err = db.Update(t.Context(), func(tx kv.Tx) error {
		runs++
		v, err := tx.Get("c", []byte("k3"))
		if err != nil || v != nil {
			return err
		}
		if runs == 1 {
			if err := db.Update(t.Context(), func(tx kv.Tx) error { return tx.Put("c", []byte("k3"), []byte("other")) }); err != nil {
				t.Errorf("the other transaction: %v", err)
			}
			if _, err := tx.Get("c", []byte("k3")); err == nil {
				return errors.New("a second Get of a key created meanwhile is no error")
			}
			return nil // and ignoring the error does not commit
		}
		return errors.New("the key is absent on the second run")
	})
	if err != nil || runs != 2 {
		t.Errorf("Update = %v after %d runs; want nil after 2", err, runs)
	}
}

func testFunctionError(t *testing.T, dsn string) {
	db := open(t, dsn, pgkv.Options{Table: newTable()})
	errBoom := errors.New("boom")
	runs := 0
	err := db.Update(t.Context(), func(tx kv.Tx) error {
		runs++
		if err := tx.Put("b", []byte("k"), []byte("v")); err != nil {
			return err
		}
		return errBoom
	})
	if err != errBoom || runs != 1 {
		t.Errorf("Update = %v after %d runs; want the function's error itself after 1", err, runs)
	}
	err = db.View(t.Context(), func(tx kv.Tx) error { return errBoom })
	if err != errBoom {
		t.Errorf("View = %v; want the function's error itself", err)
	}
}

// testSwallowedError has a function ignore a failed statement: the
// transaction is not reported committed.
func testSwallowedError(t *testing.T, dsn string) {
	db := open(t, dsn, pgkv.Options{Table: newTable()})
	err := db.Update(t.Context(), func(tx kv.Tx) error {
		if err := tx.Put("b", []byte("k"), []byte("v")); err != nil {
			return err
		}
		if err := tx.Put("bad\x00bucket", []byte("k"), []byte("v")); err == nil {
			t.Errorf("Put in a bucket named with a NUL byte: no error")
		}
		return nil
	})
	if err == nil {
		t.Errorf("Update whose function ignored a failed Put = nil; want the failure")
	}
	err = db.View(t.Context(), func(tx kv.Tx) error {
		v, err := tx.Get("b", []byte("k"))
		if v != nil {
			t.Errorf("the write before the failure was kept")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testTimeout has a transaction wait for a row another holds longer than
// Options.Timeout.
func testTimeout(t *testing.T, dsn string) {
	table := newTable()
	holder := open(t, dsn, pgkv.Options{Table: table})
	waiter := open(t, dsn, pgkv.Options{Table: table, Timeout: 300 * time.Millisecond})
	ctx := t.Context()
	if err := holder.Update(ctx, func(tx kv.Tx) error { return tx.Put("b", []byte("hot"), []byte("0")) }); err != nil {
		t.Fatal(err)
	}
	locked, release := make(chan struct{}), make(chan struct{})
	done := make(chan error)
	go func() {
		first := true
		done <- holder.Update(ctx, func(tx kv.Tx) error {
			if _, err := tx.Get("b", []byte("hot")); err != nil {
				return err
			}
			if first {
				first = false
				close(locked)
				<-release
			}
			return nil
		})
	}()
	<-locked
	start := time.Now()
	err := waiter.Update(ctx, func(tx kv.Tx) error {
		_, err := tx.Get("b", []byte("hot"))
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Update waiting for a locked row = %v; want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Update with a 300ms timeout took %v", d)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("the holder: %v", err)
	}
	// The pool works on.
	if err := waiter.Update(ctx, func(tx kv.Tx) error { return tx.Put("b", []byte("hot"), []byte("1")) }); err != nil {
		t.Errorf("Update after a timeout: %v", err)
	}
}

func testNilValue(t *testing.T, dsn string) {
	db := open(t, dsn, pgkv.Options{Table: newTable()})
	if err := db.Update(t.Context(), func(tx kv.Tx) error { return tx.Put("b", []byte("k"), nil) }); err != nil {
		t.Fatal(err)
	}
	err := db.View(t.Context(), func(tx kv.Tx) error {
		v, err := tx.Get("b", []byte("k"))
		if v == nil || len(v) != 0 {
			t.Errorf("Get after Put(nil) = %#v; want an empty value", v)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCounterUpdate increments one counter from parallel goroutines,
// each increment a read-modify-write Update, on a cluster with fsync on:
// the cost of contention on one row, to compare with kv/boltkv's.
//
//	go test -run '^$' -bench Counter ./kv/...
func BenchmarkCounterUpdate(b *testing.B) {
	cl := pgtest.Start(b, pgtest.Options{Durable: true})
	db := open(b, cl.DSN, pgkv.Options{MaxConns: 32})
	kvtest.BenchmarkCounter(b, db)
}
