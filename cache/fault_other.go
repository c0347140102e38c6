//go:build !linux

package cache

import "os"

// dropCache is a no-op where fadvise is not wired up.
func dropCache(string) {}

// allocate writes zeros where fallocate is not wired up.
func allocate(f *os.File, size int64) error {
	buf := make([]byte, 1<<16)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
			return err
		}
	}
	return f.Sync()
}
