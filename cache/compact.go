package cache

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// CompactResult gives a compaction's file sizes.
type CompactResult struct {
	Before, After int64
	// DroppedStaging is set when a snapshot staged and never swapped in
	// (a crash mid-transfer) was dropped.
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
func Compact(dir string, timeout time.Duration) (CompactResult, error) {
	var res CompactResult
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	path := filepath.Join(dir, FileName)
	fi, err := os.Stat(path)
	if err != nil {
		return res, fmt.Errorf("no store to compact: %w", err)
	}
	res.Before = fi.Size()
	opts := &bolt.Options{Timeout: timeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType}
	src, err := bolt.Open(path, 0o600, opts)
	if errors.Is(err, bolterr.ErrTimeout) {
		return res, fmt.Errorf("%w: %s (stop gated first: systemctl stop gated)", ErrLocked, path)
	}
	if err != nil {
		return res, fmt.Errorf("open store %s: %w", path, err)
	}
	defer src.Close()
	err = src.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bMeta) == nil {
			return fmt.Errorf("%s is not a gate store", path)
		}
		res.DroppedStaging = tx.Bucket(bStaging) != nil
		if err := dropRetired(tx); err != nil {
			return err
		}
		return dropStaging(tx)
	})
	if err != nil {
		return res, err
	}
	tmp := path + ".compact"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, err
	}
	dst, err := bolt.Open(tmp, 0o600, opts)
	if err != nil {
		return res, fmt.Errorf("create %s: %w", tmp, err)
	}
	// gated compact run as root must not leave a file the gated user
	// cannot open.
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := os.Chown(tmp, int(st.Uid), int(st.Gid)); err != nil {
			dst.Close()
			os.Remove(tmp)
			return res, fmt.Errorf("give the copy the store's owner: %w", err)
		}
	}
	if err := bolt.Compact(dst, src, compactTxBytes); err != nil {
		dst.Close()
		os.Remove(tmp)
		return res, fmt.Errorf("compact: %w", err)
	}
	if err := dst.Close(); err != nil {
		os.Remove(tmp)
		return res, err
	}
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return res, err
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

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
