package cache

import bolt "go.etcd.io/bbolt"

// SetArchiveCrash makes every archive step fail with err after its file
// was written and fsync'd, before its records leave the store (nil: off).
func SetArchiveCrash(err error) {
	if err == nil {
		archiveCrash = nil
		return
	}
	archiveCrash = func() error { return err }
}

// Retired counts the keys of the whitelist a snapshot replaced that are
// not deleted yet, and reports whether the bucket holding them exists.
func (s *Store) Retired() (int, bool) {
	n, found := 0, false
	s.db.View(func(tx *bolt.Tx) error {
		ret := tx.Bucket(bRetired)
		if found = ret != nil; found {
			ret.ForEachBucket(func(k []byte) error { n += ret.Bucket(k).Stats().KeyN; return nil })
		}
		return nil
	})
	return n, found
}

// RetireWithoutDeleting moves the whitelist into the retired bucket as a snapshot's
// swap does, without deleting it: the state a crash right after the swap
// leaves.
func (s *Store) RetireWithoutDeleting() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		ret, err := tx.CreateBucket(bRetired)
		if err != nil {
			return err
		}
		if err := tx.MoveBucket(bTickets, nil, ret); err != nil {
			return err
		}
		_, err = tx.CreateBucket(bTickets)
		return err
	})
}
