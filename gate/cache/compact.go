package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// CompactResult gives a compaction's file sizes.
type CompactResult struct {
	Before, After int64
	// DroppedStaging is set when a snapshot staged and never swapped in
	// (a crash mid-transfer) was left out of the copy.
	DroppedStaging bool
}

// compactTxBytes bounds the copy's write transactions (bbolt.Compact
// commits each time this much was copied), so memory stays small.
const compactTxBytes = 16 << 20

// Compact rewrites the store in dir without its free pages: bbolt never
// shrinks its file, so what archiving and acks delete is only reused, not
// returned. It must run offline: it holds the store's lock throughout, so
// it refuses (ErrLocked) while gated runs, and a gated started meanwhile
// waits, then refuses. The copy is written beside the store, fsync'd and
// renamed over it, and the directory fsync'd: a crash leaves the old file
// or the new one, never half of one (a leftover copy is removed next time).
// The store itself is only read, so a damaged one is refused as it is.
func Compact(dir string, timeout time.Duration) (res CompactResult, err error) {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	path := filepath.Join(dir, FileName)
	tmp := path + ".compact"
	// bbolt panics on damaged pages, and reading a page past the end of a
	// cut file faults: both become an error here. The source is opened
	// read-only, so bbolt starts no goroutine of its own to rebuild the
	// freelist (whose panics no recover could catch): the whole copy runs
	// on this goroutine.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			os.Remove(tmp)
			os.Remove(tmp + "2")
			err = fmt.Errorf("%s is damaged (%v); it was left as it is: copy its records out (gated salvage) and provision a fresh store", path, r)
		}
	}()
	fi, err := os.Stat(path)
	if err != nil {
		return res, fmt.Errorf("no store to compact: %w", err)
	}
	res.Before = fi.Size()
	if fi.Size() == 0 {
		// bbolt would write a new empty store into it.
		return res, fmt.Errorf("%s is empty, not a store: it was left as it is; provision a fresh --data directory", path)
	}
	src, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: true})
	if errors.Is(err, bolterr.ErrTimeout) {
		return res, fmt.Errorf("%w: %s (stop gated first: systemctl stop gated)", ErrLocked, path)
	}
	if err != nil {
		return res, fmt.Errorf("open store %s: %w", path, err)
	}
	defer src.Close()
	var leftovers bool
	err = src.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bMeta) == nil {
			return fmt.Errorf("%s is not a gate store", path)
		}
		res.DroppedStaging = tx.Bucket(bStaging) != nil
		leftovers = res.DroppedStaging || tx.Bucket(bRetired) != nil
		return nil
	})
	if err != nil {
		return res, err
	}
	if err := copyStore(src, tmp, fi); err != nil {
		os.Remove(tmp)
		return res, err
	}
	if leftovers {
		// Rare (a crash mid-snapshot): drop them from the copy, then copy
		// the copy so their pages do not stay in it.
		if err := dropLeftovers(tmp, fi); err != nil {
			os.Remove(tmp)
			os.Remove(tmp + "2")
			return res, err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return res, err
	}
	if err := syncDir(dir); err != nil {
		return res, err
	}
	if fi, err := os.Stat(path); err == nil {
		res.After = fi.Size()
	}
	return res, nil
}

var compactOpts = &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType}

// copyStore writes src's records into a new file at to, owned like the
// store (gated compact run as root must leave a file gated can open), and
// fsyncs it.
func copyStore(src *bolt.DB, to string, like os.FileInfo) error {
	if err := os.Remove(to); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dst, err := bolt.Open(to, 0o600, compactOpts)
	if err != nil {
		return fmt.Errorf("create %s: %w", to, err)
	}
	if st, ok := like.Sys().(*syscall.Stat_t); ok {
		if err := os.Chown(to, int(st.Uid), int(st.Gid)); err != nil {
			dst.Close()
			return fmt.Errorf("give the copy the store's owner: %w", err)
		}
	}
	if err := bolt.Compact(dst, src, compactTxBytes); err != nil {
		dst.Close()
		return fmt.Errorf("compact: %w", err)
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return syncFile(to)
}

// dropLeftovers deletes the staging and retired buckets from the copy at
// path and compacts it once more in place.
func dropLeftovers(path string, like os.FileInfo) error {
	db, err := bolt.Open(path, 0o600, compactOpts)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := dropRetired(tx); err != nil {
			return err
		}
		return dropStaging(tx)
	}); err != nil {
		return err
	}
	if err := copyStore(db, path+"2", like); err != nil {
		return err
	}
	return os.Rename(path+"2", path)
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
