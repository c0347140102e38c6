package cache

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// A snapshot is staged, not applied in one transaction: a million tickets
// in one bbolt transaction held every scan for seconds and every dirty
// page in the heap (2.2 s, 243 MB). Chunks go into the bucket "staging"
// (children "tickets" and "revocations") as they arrive, in short
// transactions that scans interleave with; Commit swaps the staged buckets
// in with the version check in one short transaction. Until then the old
// whitelist is in force, also after a crash: a staging bucket left behind
// is dropped by the next StageSnapshot (or by gated compact).

var (
	bStaging      = []byte("staging")
	bRetired      = []byte("retired") // the whitelist a snapshot replaced, deleted in steps
	kStageID      = []byte("id")
	kStageEvent   = []byte("event")
	kStageVersion = []byte("version")
)

// MaxStageRecords bounds the records written in one staging transaction,
// so a scan waits at most for that many inserts and one fsync.
const MaxStageRecords = 4096

// ErrStagingReplaced means another snapshot was staged (or the staging
// dropped) since this one began: its chunks are gone.
var ErrStagingReplaced = errors.New("staged snapshot was replaced by a newer one")

// Staging is a snapshot being written chunk by chunk. Its methods must be
// called from one goroutine; scans and other store calls run meanwhile.
type Staging struct {
	s  *Store
	sn Snapshot // the header: Chunks unused
	id []byte
}

// StageSnapshot begins a snapshot: it checks the event, that Version is
// newer than the store's (ErrStale otherwise) and that the trust list
// verifies against the pinned root, drops any earlier staging, and returns
// the staging to Add chunks to. sn.Chunks is ignored.
func (s *Store) StageSnapshot(sn *Snapshot) (*Staging, error) {
	// Refuse before dropping an earlier staging: a stale manifest must
	// not cost the snapshot being received.
	if err := s.db.View(func(tx *bolt.Tx) error { return checkSnapshot(tx.Bucket(bMeta), sn) }); err != nil {
		return nil, err
	}
	// An abandoned staging, and a whitelist a crash left half-retired, go
	// first, in steps.
	if _, err := s.DropStaging(); err != nil {
		return nil, err
	}
	st := &Staging{s: s, sn: *sn, id: make([]byte, 8)}
	st.sn.Chunks = nil
	rand.Read(st.id)
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := checkSnapshot(tx.Bucket(bMeta), sn); err != nil {
			return err
		}
		if err := retireStaging(tx); err != nil { // one begun since DropStaging
			return err
		}
		stg, err := tx.CreateBucket(bStaging)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bTickets, bRevocations} {
			if _, err := stg.CreateBucket(name); err != nil {
				return err
			}
		}
		for k, v := range map[string][]byte{string(kStageID): st.id, string(kStageEvent): []byte(sn.Event),
			string(kStageVersion): binary.BigEndian.AppendUint64(nil, sn.Version)} {
			if err := stg.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// checkSnapshot refuses a snapshot for another event, not newer than the
// store (ErrStale), or whose trust list does not verify against the
// pinned root. Commit checks the version and the trust list again.
func checkSnapshot(m *bolt.Bucket, sn *Snapshot) error {
	cur, err := checkVersion(m, sn.Event)
	if err != nil {
		return err
	}
	if cur >= sn.Version {
		return fmt.Errorf("%w: holds %d, snapshot is %d", ErrStale, cur, sn.Version)
	}
	_, err = verify.OpenTrustList(sn.TrustList, ed25519.PublicKey(m.Get(kRoot)))
	return err
}

// dropStaging deletes the staging at once (gated compact, on its copy).
func dropStaging(tx *bolt.Tx) error {
	if tx.Bucket(bStaging) == nil {
		return nil
	}
	return tx.DeleteBucket(bStaging)
}

// retireStaging moves the staged buckets into "retired" for retire to
// delete in steps, and deletes what is left of the staging (its few keys):
// a staging of a million tickets deleted at once would read every page of
// it, like a replaced whitelist.
func retireStaging(tx *bolt.Tx) error {
	stg := tx.Bucket(bStaging)
	if stg == nil {
		return nil
	}
	ret, err := tx.CreateBucketIfNotExists(bRetired)
	if err != nil {
		return err
	}
	for _, name := range [][]byte{bTickets, bRevocations} {
		if stg.Bucket(name) == nil {
			continue
		}
		if ret.Bucket(name) != nil { // only if retire failed: take the cost now
			if err := ret.DeleteBucket(name); err != nil {
				return err
			}
		}
		if err := tx.MoveBucket(name, stg, ret); err != nil {
			return err
		}
	}
	return tx.DeleteBucket(bStaging)
}

// ours returns the staging bucket if it is still this staging's.
func (st *Staging) ours(tx *bolt.Tx) (*bolt.Bucket, error) {
	stg := tx.Bucket(bStaging)
	if stg == nil || !bytes.Equal(stg.Get(kStageID), st.id) {
		return nil, ErrStagingReplaced
	}
	return stg, nil
}

type stagedRecord struct {
	kind  byte
	id    verify.TicketID
	value []byte // aliases the chunk
}

// Add checks a chunk's records (ErrRecord: nothing of the chunk is
// written) and writes them to the staging in transactions of at most
// MaxStageRecords records. The caller has checked the chunk against the
// signed manifest. Adding a chunk twice is harmless.
func (st *Staging) Add(chunk []byte) error {
	var recs []stagedRecord
	if err := EachRecord(chunk, func(kind byte, id verify.TicketID, v []byte) error {
		recs = append(recs, stagedRecord{kind, id, v})
		return nil
	}); err != nil {
		return err
	}
	for len(recs) > 0 {
		n := min(len(recs), MaxStageRecords)
		err := st.s.db.Update(func(tx *bolt.Tx) error {
			stg, err := st.ours(tx)
			if err != nil {
				return err
			}
			tb, rb := stg.Bucket(bTickets), stg.Bucket(bRevocations)
			// Snapshot records come in id order: full pages keep the file
			// small (a million tickets on a small gate box); deltas later
			// split pages.
			tb.FillPercent, rb.FillPercent = 1.0, 1.0
			for i := range recs[:n] {
				r := &recs[i]
				b := tb
				if r.kind == recRevocation {
					b = rb
				}
				if err := b.Put(r.id[:], r.value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

// Commit swaps the staged whitelist and revocations in, with the trust
// list, in one transaction that checks again that the snapshot is newer
// than the store (a delta may have overtaken it: ErrStale, and the staging
// is dropped). Used tickets, the journal and the outbox stay. It returns
// the new trust list.
func (st *Staging) Commit() (*verify.TrustList, error) {
	var tl *verify.TrustList
	err := st.s.db.Update(func(tx *bolt.Tx) error {
		stg, err := st.ours(tx)
		if err != nil {
			return err
		}
		m := tx.Bucket(bMeta)
		cur, err := checkVersion(m, st.sn.Event)
		if err != nil {
			return err
		}
		if cur >= st.sn.Version {
			return fmt.Errorf("%w: holds %d, snapshot is %d", ErrStale, cur, st.sn.Version)
		}
		if tl, err = putTrust(m, st.sn.TrustList); err != nil {
			return err
		}
		// Moving a bucket moves its root page reference: the swap costs
		// the same for ten tickets or a million. The old buckets are
		// retired rather than deleted here: deleting a bucket reads every
		// one of its pages, which put a million tickets' worth of the file
		// in the process's memory at once and held scans meanwhile.
		if err := dropRetired(tx); err != nil {
			return err
		}
		ret, err := tx.CreateBucket(bRetired)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bTickets, bRevocations} {
			if err := tx.MoveBucket(name, nil, ret); err != nil {
				return err
			}
			if err := tx.MoveBucket(name, stg, nil); err != nil {
				return err
			}
		}
		if err := tx.DeleteBucket(bStaging); err != nil {
			return err
		}
		if err := m.Put(kBundleVersion, binary.BigEndian.AppendUint64(nil, st.sn.Version)); err != nil {
			return err
		}
		return m.Put(kBundleCreated, binary.BigEndian.AppendUint64(nil, uint64(st.sn.CreatedAt.UnixNano())))
	})
	if errors.Is(err, ErrStale) {
		if aerr := st.Abort(); aerr != nil {
			st.s.log.Warn("drop stale staged snapshot", "err", aerr)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := st.s.retire(); err != nil {
		// The new whitelist is in force; the old one only takes space
		// until the next snapshot or gated compact.
		st.s.log.Warn("delete the replaced whitelist", "err", err)
	}
	return tl, nil
}

// retireEvery is how many retire steps run between ReleasePages calls:
// about 4 MB of the file's pages mapped in at most.
const retireEvery = 16

// retire deletes the retired whitelist MaxStageRecords keys a transaction,
// giving the pages it read back to the system as it goes.
func (s *Store) retire() error {
	for step := 1; ; step++ {
		done := false
		err := s.db.Update(func(tx *bolt.Tx) error {
			ret := tx.Bucket(bRetired)
			if ret == nil {
				done = true
				return nil
			}
			var child []byte
			ret.ForEachBucket(func(k []byte) error {
				if child == nil {
					child = bytes.Clone(k)
				}
				return nil
			})
			if child == nil {
				done = true
				return tx.DeleteBucket(bRetired)
			}
			b := ret.Bucket(child)
			var keys [][]byte
			c := b.Cursor()
			for k, _ := c.First(); k != nil && len(keys) < MaxStageRecords; k, _ = c.Next() {
				keys = append(keys, bytes.Clone(k))
			}
			if len(keys) == 0 {
				return ret.DeleteBucket(child) // empty now: freeing it reads one page
			}
			// Deleting under a moving cursor skips keys in bbolt; delete after.
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if done || step%retireEvery == 0 {
			if err := s.ReleasePages(); err != nil {
				s.log.Warn("release store pages", "err", err)
			}
		}
		if done {
			return nil
		}
	}
}

// dropRetired deletes a retired whitelist left by a crash in one go.
func dropRetired(tx *bolt.Tx) error {
	if tx.Bucket(bRetired) == nil {
		return nil
	}
	return tx.DeleteBucket(bRetired)
}

// Abort drops the staging, if it is still this one's.
func (st *Staging) Abort() error {
	err := st.s.db.Update(func(tx *bolt.Tx) error {
		if _, err := st.ours(tx); err != nil {
			return nil // replaced or gone: nothing of ours to drop
		}
		return retireStaging(tx)
	})
	if err != nil {
		return err
	}
	return st.s.retire()
}

// DropStaging deletes a staged snapshot left by a crash or an abandoned
// transfer, in steps, reporting whether there was one; and finishes
// deleting a whitelist a crash left half-retired.
func (s *Store) DropStaging() (bool, error) {
	found := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		found = tx.Bucket(bStaging) != nil
		return retireStaging(tx)
	})
	if err != nil {
		return found, err
	}
	return found, s.retire()
}
