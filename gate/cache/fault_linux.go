package cache

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// dropCache asks the kernel to drop the file's clean cached pages, so a
// reopen after a failed fsync reads what the disk holds: Linux marks pages
// whose writeback failed clean, and would otherwise serve them as if they
// were written.
func dropCache(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// allocate gives f size bytes of disk, really allocated (a sparse file
// would reserve nothing).
func allocate(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, size)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return writeZeros(f, size) // a filesystem without fallocate (old vfat)
	}
	return err
}
