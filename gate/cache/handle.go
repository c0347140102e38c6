package cache

import (
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// handle is the store's bbolt file as the rest of the package sees it. It
// exists so that the group committer can close and reopen the file after a
// failed commit (see recoverCommit) while other goroutines read: readers
// hold the read lock for the length of their transaction, the swap holds
// the write lock. It also turns bbolt's panics on a damaged page, and the
// memory faults of a file shorter than its map, into ErrDamaged, so that
// no reader of a damaged store takes the daemon down.
type handle struct {
	mu sync.RWMutex
	// p is the open file; read without mu by Path, Info and Begin, which
	// may be called inside a transaction (a nested RLock would deadlock
	// behind a waiting swap).
	p atomic.Pointer[bolt.DB]
}

func newHandle(db *bolt.DB) *handle {
	h := &handle{}
	h.p.Store(db)
	return h
}

// guard recovers a panic of bbolt reading a damaged page into ErrDamaged.
// SetPanicOnFault makes a fault on the file's memory map (a file cut short
// under the map) a panic too, instead of a crash of the whole process.
func guard(path string, err *error) {
	if r := recover(); r != nil {
		*err = damaged(path, fmt.Sprint(r))
	}
}

// View is bolt.DB.View on the current file.
func (h *handle) View(fn func(*bolt.Tx) error) (err error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db := h.p.Load()
	defer guard(db.Path(), &err)
	return db.View(fn)
}

// Update is bolt.DB.Update on the current file.
func (h *handle) Update(fn func(*bolt.Tx) error) (err error) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db := h.p.Load()
	defer guard(db.Path(), &err)
	return db.Update(fn)
}

// Begin is bolt.DB.Begin; only the group committer and benchmarks use it,
// from the goroutine that also swaps the file.
func (h *handle) Begin(writable bool) (*bolt.Tx, error) { return h.current().Begin(writable) }

// Path is the file's path.
func (h *handle) Path() string { return h.current().Path() }

// Info is bolt.DB.Info of the current file.
func (h *handle) Info() *bolt.Info { return h.current().Info() }

// Close closes the current file.
func (h *handle) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.p.Load().Close()
}

func (h *handle) current() *bolt.DB { return h.p.Load() }

// swap closes the current file and puts in what reopen returns; on error
// the old (closed) file stays, so every reader gets bolt's "database not
// open" until a later swap succeeds.
func (h *handle) swap(reopen func() (*bolt.DB, error)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.p.Load().Close()
	db, err := reopen()
	if err != nil {
		return err
	}
	h.p.Store(db)
	return nil
}
