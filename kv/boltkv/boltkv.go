// Package boltkv is the kv store in one bbolt file: the sales books of a
// centre that runs on one machine.
package boltkv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gated-dev/gated/kv"
	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// DB is a kv.DB in a bbolt file. bbolt runs one read-write transaction at
// a time, so Update never needs to run its function twice; Batch may.
type DB struct {
	db *bolt.DB
}

// Open opens or creates the store at path. A file another process holds
// open is waited for up to five seconds, then refused.
func Open(path string) (*DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if errors.Is(err, bolterr.ErrTimeout) {
		return nil, fmt.Errorf("open %s: another process holds it open (stop it, or give this one its own file)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

// Bolt returns the underlying bbolt database.
func (d *DB) Bolt() *bolt.DB { return d.db }

// Close closes the file.
func (d *DB) Close() error { return d.db.Close() }

// Update implements kv.DB.
func (d *DB) Update(ctx context.Context, fn func(kv.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.db.Update(func(tx *bolt.Tx) error { return fn(&boltTx{tx: tx}) })
}

// Batch implements kv.DB with bolt.DB.Batch: concurrent callers share a
// commit, and a function whose batch failed is run again on its own.
func (d *DB) Batch(ctx context.Context, fn func(kv.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.db.Batch(func(tx *bolt.Tx) error { return fn(&boltTx{tx: tx}) })
}

// View implements kv.DB.
func (d *DB) View(ctx context.Context, fn func(kv.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.db.View(func(tx *bolt.Tx) error { return fn(&boltTx{tx: tx}) })
}

type boltTx struct{ tx *bolt.Tx }

func (t *boltTx) Get(bucket string, key []byte) ([]byte, error) {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil, nil
	}
	return b.Get(key), nil
}

func (t *boltTx) Put(bucket string, key, value []byte) error {
	if !t.tx.Writable() {
		return kv.ErrReadOnly
	}
	if value == nil {
		value = []byte{}
	}
	b, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return b.Put(key, value)
}

func (t *boltTx) Delete(bucket string, key []byte) error {
	if !t.tx.Writable() {
		return kv.ErrReadOnly
	}
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	return b.Delete(key)
}

func (t *boltTx) Scan(bucket string, from, to []byte, fn func(k, v []byte) error) error {
	b := t.tx.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	c := b.Cursor()
	var k, v []byte
	if from == nil {
		k, v = c.First()
	} else {
		k, v = c.Seek(from)
	}
	for ; k != nil && (to == nil || bytes.Compare(k, to) < 0); k, v = c.Next() {
		if err := fn(k, v); err != nil {
			if errors.Is(err, kv.Stop) {
				return nil
			}
			return err
		}
	}
	return nil
}
