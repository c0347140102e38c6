//go:build !linux

package cache

import "os"

// dropCache is a no-op where fadvise is not wired up.
func dropCache(string) {}

// allocate writes zeros where fallocate is not wired up.
func allocate(f *os.File, size int64) error { return writeZeros(f, size) }
