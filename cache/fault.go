package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// What the store does when its disk fails. A failed commit (EIO on a write
// or an fdatasync, a full disk, a short write) leaves the file in doubt:
// after a failed fsync the page cache and the disk may disagree, and bbolt
// would build the next commit on pages it believes were never written (the
// trap PostgreSQL has treated as fatal since 2018). So the store is closed,
// the file's cached pages are dropped, it is reopened, and what is durable
// is read back before the scans of that batch are answered: the verdict
// signalled is the verdict stored.

// Health is the store's record of its disk, for /healthz and /status.
type Health struct {
	OK bool
	// Err is the last commit's error while not OK.
	Err string
	// Since is when the store started failing.
	Since time.Time
	// Failures counts the failed commits since then.
	Failures int
}

// Health reports whether the last commit reached the disk.
func (s *Store) Health() Health {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	return s.health
}

func (s *Store) committed() {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if !s.health.OK {
		s.log.Info("store commits again", "failed_since", s.health.Since, "failures", s.health.Failures)
	}
	s.health = Health{OK: true}
}

func (s *Store) fault(err error) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if s.health.OK {
		s.health.Since = s.opts.Now()
	}
	s.health.OK, s.health.Err = false, err.Error()
	s.health.Failures++
}

// recoverCommit answers a batch whose commit failed with what a reopened
// store holds: the batch's true entries if the commit turned out durable,
// storage_failure DENYs if it did not.
func (s *Store) recoverCommit(batch []*request, txid int, cerr error) {
	s.fault(cerr)
	durable, rerr := s.readBack(batch, txid)
	switch {
	case rerr != nil:
		s.fault(rerr)
		s.log.Error("commit failed and the store could not be read back; denying the batch",
			"err", cerr, "reopen_err", rerr, "batch", len(batch))
	case durable:
		s.log.Error("commit reported failure but reached the disk; signalling what is stored",
			"err", cerr, "batch", len(batch))
	default:
		s.log.Error("commit failed; nothing of the batch was stored", "err", cerr, "batch", len(batch))
	}
	err := cerr
	if rerr != nil {
		err = fmt.Errorf("%w (reading the store back: %v)", cerr, rerr)
	}
	for _, r := range batch {
		if !durable || rerr != nil {
			if r.fn == nil {
				r.entry = failed(r.scan, err)
			}
			r.err = fmt.Errorf("commit: %w", err)
		}
		close(r.done)
	}
}

// errDisagrees means a reopened store holds a transaction but not the
// records this process put in it.
var errDisagrees = errors.New("reopened store disagrees with the batch it committed")

// readBack reopens the store and reports whether transaction txid, and
// with it every record of the batch, is on disk.
func (s *Store) readBack(batch []*request, txid int) (bool, error) {
	path := s.db.Path()
	dropCache(path)
	if err := s.db.swap(func() (*bolt.DB, error) { return openBolt(path, &s.opts) }); err != nil {
		return false, err
	}
	durable := false
	err := s.db.View(func(tx *bolt.Tx) error {
		switch {
		case tx.ID() < txid:
			return nil
		case tx.ID() > txid:
			return fmt.Errorf("%w: transaction %d, expected at most %d", errDisagrees, tx.ID(), txid)
		}
		durable = true
		for _, r := range batch {
			if r.fn != nil {
				continue
			}
			rec, _ := json.Marshal(&r.entry)
			key := binary.BigEndian.AppendUint64(nil, r.entry.Seq)
			if got := tx.Bucket(bJournal).Get(key); !bytes.Equal(got, rec) {
				return fmt.Errorf("%w: journal record %d", errDisagrees, r.entry.Seq)
			}
		}
		return nil
	})
	return durable, err
}
