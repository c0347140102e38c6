// Package kv is a small transactional, ordered key-value store: named
// buckets of byte keys in byte order, read and written in closure-scoped
// transactions. It is what the sales books are kept in, so that one
// implementation of the sales rules runs on either backend:
//
//   - kv/boltkv: one bbolt file, the default for a single centre machine;
//   - kv/pgkv: a PostgreSQL table, for a centre that must survive the loss
//     of one machine or be reached by several.
//
// kv/kvtest is the conformance suite both pass.
//
// The contract is bbolt's, with two additions that a networked database
// needs. First, a read-write transaction may run its function more than
// once: PostgreSQL resolves two transactions that raced for the same key by
// failing one, and the implementation runs it again. A function given to
// Update or Batch must therefore have no effect outside the transaction
// other than on variables it sets afresh on every run. Second, every
// operation returns an error, since the network can fail mid-transaction.
package kv

import (
	"context"
	"errors"
)

// DB is a transactional key-value store. It is safe for concurrent use.
type DB interface {
	// Update runs fn in a read-write transaction and commits it when fn
	// returns nil; when fn returns an error, nothing it wrote is kept and
	// Update returns that error. Transactions that write the same keys
	// are serialised: whatever fn read stays as read until the commit.
	// fn may run more than once (see the package comment).
	Update(ctx context.Context, fn func(Tx) error) error
	// Batch is Update for many small concurrent writers that can share a
	// commit: bbolt joins them into one fsync. fn may run more than once
	// even on bbolt.
	Batch(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction that sees one consistent
	// state of the store.
	View(ctx context.Context, fn func(Tx) error) error
	// Close releases the store; transactions must have ended.
	Close() error
}

// Tx is a transaction. It is used by one goroutine, inside the function
// it was given to, and never after that function returns. Byte slices it
// returns are valid only until the transaction ends: copy what must
// outlive it.
type Tx interface {
	// Get returns the value of key in bucket, or nil when there is none
	// (a missing bucket has no keys). In a read-write transaction the key
	// stays as read until the commit: another transaction writing it
	// waits, and a transaction that read a key as absent and then Puts it
	// is run again if another created the key meanwhile.
	Get(bucket string, key []byte) ([]byte, error)
	// Put sets key in bucket to value, creating the bucket if needed. A
	// nil value is stored as an empty one, and an empty value is read
	// back as empty, not nil, so presence is never lost. Keys must be 1
	// to 2,000 bytes (PostgreSQL's index limit is the tighter one) and
	// bucket names valid UTF-8 without NUL. A store may send writes at
	// the commit (pgkv does, to save round trips): a write it refuses then
	// fails the Update, not the Put.
	Put(bucket string, key, value []byte) error
	// Delete removes key from bucket; deleting a missing key is not an
	// error.
	Delete(bucket string, key []byte) error
	// Scan calls fn for each key of bucket in [from, to) in byte order; a
	// nil to scans to the end, a nil from from the start. When fn returns
	// Stop the scan ends without error; any other error ends it with that
	// error. In a read-write transaction the keys scanned stay as read
	// until the commit, but a key created inside the range meanwhile is
	// not seen: a decision "nothing there, so create" must be made with
	// a Get of one fixed key, never from an empty scan, or two
	// transactions can both make it on PostgreSQL. fn must not write to
	// the bucket being scanned: collect the keys and write after the scan.
	Scan(bucket string, from, to []byte, fn func(k, v []byte) error) error
}

// Stop is returned by a Scan function to end the scan early without an
// error.
//
//lint:ignore ST1012 Stop is a signal, like filepath.SkipDir, not a failure
var Stop = errors.New("kv: stop scan")

// ErrReadOnly is returned by Put and Delete in a View transaction.
var ErrReadOnly = errors.New("kv: write in a read-only transaction")

// PrefixEnd returns the smallest key greater than every key that starts
// with prefix, for Scan(bucket, prefix, PrefixEnd(prefix), fn); nil (the
// end) when there is none, as for a prefix of 0xff bytes.
func PrefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// ScanPrefix calls fn for each key of bucket that starts with prefix, in
// byte order.
func ScanPrefix(tx Tx, bucket string, prefix []byte, fn func(k, v []byte) error) error {
	return tx.Scan(bucket, prefix, PrefixEnd(prefix), fn)
}

// Copy copies every key of the named buckets from src into dst, in
// transactions of at most batch keys (0: 1000), and returns how many keys
// it copied. Keys already in dst are overwritten; dst keys absent from
// src are left alone. It is for moving a store from one backend to
// another while nothing writes to src.
func Copy(ctx context.Context, dst, src DB, buckets []string, batch int) (int, error) {
	if batch <= 0 {
		batch = 1000
	}
	n := 0
	for _, b := range buckets {
		var from []byte
		for {
			var ks, vs [][]byte
			err := src.View(ctx, func(tx Tx) error {
				ks, vs = nil, nil
				return tx.Scan(b, from, nil, func(k, v []byte) error {
					if len(ks) == batch {
						return Stop
					}
					ks = append(ks, append([]byte(nil), k...))
					vs = append(vs, append([]byte{}, v...))
					return nil
				})
			})
			if err != nil {
				return n, err
			}
			if len(ks) == 0 {
				break
			}
			err = dst.Update(ctx, func(tx Tx) error {
				for i := range ks {
					if err := tx.Put(b, ks[i], vs[i]); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return n, err
			}
			n += len(ks)
			if len(ks) < batch {
				break
			}
			from = append(ks[len(ks)-1], 0) // the next key after the last copied
		}
	}
	return n, nil
}
