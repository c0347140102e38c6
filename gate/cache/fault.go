package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
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

// Health reports whether the last commit reached the disk, and whether
// the space reserve is held.
func (s *Store) Health() Health {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	h := s.health
	if h.OK && !s.reserveOut.IsZero() {
		h = Health{Err: "disk full: the store's space reserve is in use; free space in " + filepath.Dir(s.db.Path()),
			Since: s.reserveOut}
	}
	return h
}

// Probe commits an empty transaction (a meta page and its fdatasync) to
// find out whether the disk works again, and takes the space reserve back
// when there is room. It returns the health's error, if any. The watchdog
// check calls it while the store is unhealthy.
func (s *Store) Probe() error {
	if err := s.joinCommit(func(*bolt.Tx) error { return nil }); err != nil {
		return err
	}
	s.healthMu.Lock()
	out := !s.reserveOut.IsZero()
	s.healthMu.Unlock()
	if out {
		if err := s.holdReserve(); err == nil {
			s.log.Info("disk space reserve taken back")
		}
	}
	if h := s.Health(); !h.OK {
		return errors.New(h.Err)
	}
	return nil
}

// holdReserve allocates the space reserve file, or checks it is there.
func (s *Store) holdReserve() error {
	if s.opts.Reserve <= 0 {
		return nil
	}
	path := filepath.Join(filepath.Dir(s.db.Path()), ReserveName)
	if fi, err := os.Stat(path); err == nil && fi.Size() >= s.opts.Reserve {
		s.setReserve(true)
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	err = allocate(f, s.opts.Reserve)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return err
	}
	s.setReserve(true)
	return nil
}

func (s *Store) setReserve(held bool) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	switch {
	case held:
		s.reserveOut = time.Time{}
	case s.reserveOut.IsZero():
		s.reserveOut = s.opts.Now()
	}
}

// releaseReserve frees the space reserve after a commit found the disk
// full; it reports whether there was one to free.
func (s *Store) releaseReserve() bool {
	if s.opts.Reserve <= 0 {
		return false
	}
	path := filepath.Join(filepath.Dir(s.db.Path()), ReserveName)
	if err := os.Remove(path); err != nil {
		return false
	}
	s.log.Error("disk full: released the store's space reserve; free space on the gate's disk", "bytes", s.opts.Reserve, "dir", filepath.Dir(path))
	s.setReserve(false)
	return true
}

// logLimited logs a storage error that may repeat on every scan at most
// once per Options.LogEvery, with the count of those held back.
func (s *Store) logLimited(msg string, args ...any) {
	if ok, n := s.rl.Allow(msg); ok {
		if n > 0 {
			args = append(args, "repeated", n)
		}
		s.log.Error(msg, args...)
	}
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
// storage_failure DENYs if it did not. It returns false without answering
// when the batch is worth one more try: the disk was full, nothing of the
// batch was stored, and the space reserve was just freed for it.
func (s *Store) recoverCommit(batch []*request, txid int, cerr error, retried bool) bool {
	s.fault(cerr)
	freed := errors.Is(cerr, syscall.ENOSPC) && s.releaseReserve()
	durable, rerr := s.readBack(batch, txid)
	switch {
	case rerr != nil:
		// The one case where a stored ADMIT may have been signalled DENY:
		// name the tickets, so a supervisor can let their holders in.
		var doubt []string
		for _, r := range batch {
			if r.fn == nil && r.entry.Verdict == Admit {
				doubt = append(doubt, r.entry.Ticket)
			}
		}
		s.fault(rerr)
		s.log.Error("commit failed and the store could not be read back; denying the batch, whose admissions may be stored",
			"err", cerr, "reopen_err", rerr, "batch", len(batch), "tickets_in_doubt", doubt)
	case durable:
		s.logLimited("commit reported failure but reached the disk; signalling what is stored",
			"err", cerr, "batch", len(batch))
	case freed && !retried:
		s.log.Warn("disk full: trying the batch again in the space the reserve freed", "batch", len(batch))
		return false
	default:
		s.logLimited("commit failed; nothing of the batch was stored", "err", cerr, "batch", len(batch))
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
		s.finish(r)
	}
	return true
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

// writeZeros allocates size bytes of f by writing them, then syncs.
func writeZeros(f *os.File, size int64) error {
	buf := make([]byte, 1<<16)
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off); err != nil {
			return err
		}
	}
	return f.Sync()
}
