package cache

import (
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// ReleasePages drops the store file's pages from this process's memory
// map (MADV_DONTNEED on a read-only shared mapping: the data stays in the
// file and the page cache, and is faulted back in when read). Opening the
// store (the freelist is rebuilt by reading every page) and applying a
// large snapshot leave every page of the file mapped; with a million
// tickets that is tens of megabytes of a small gate box's resident memory
// for pages a decision touches only a handful of.
func (s *Store) ReleasePages() error {
	// Inside a read transaction bbolt cannot remap the file under us.
	return s.db.View(func(tx *bolt.Tx) error {
		info := s.db.Info()
		size := uintptr(tx.Size())
		if size == 0 {
			return nil
		}
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, info.Data, size, unix.MADV_DONTNEED); e != 0 {
			return e
		}
		return nil
	})
}
