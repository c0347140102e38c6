//go:build !linux

package cache

// dropCache is a no-op where fadvise is not wired up.
func dropCache(string) {}
