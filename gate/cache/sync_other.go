//go:build !linux

package cache

// ReleasePages is a no-op where madvise is not wired up.
func (s *Store) ReleasePages() error { return nil }
