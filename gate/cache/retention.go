package cache

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// Retention: journal records older than a configured age that the centre
// has acked (no longer in the outbox) move out of the store into one
// gzip'd JSON-lines file a day, DIR/journal-YYYY-MM-DD.jsonl.gz (the UTC
// day of the decision). A file is appended to in gzip members, each
// written and fsync'd before its records are deleted from the store, in
// the transaction that also records the file's new committed length in the
// bucket "archive". A run interrupted between the two leaves a member the
// store does not count: the next run cuts the file back to the committed
// length before appending, and readers stop there, so no record is lost or
// read twice.
//
// Only journal records are archived. Uses are the single-use guarantee:
// PruneUses deletes only those of tickets whose validity ended long ago.

var bArchive = []byte("archive")

// archiveCrash, set by tests, stops an archive step between the file's
// fsync and the store's delete, where a power cut could stop it.
var archiveCrash func() error

// ArchiveBatch is how many records one archive step moves: one gzip member
// and one delete transaction, short enough that scans barely wait.
const ArchiveBatch = 2000

// ArchiveResult says what Archive moved.
type ArchiveResult struct {
	Records  int      // journal records archived
	Files    []string // files appended to, in order
	FirstSeq uint64   // 0 when nothing moved
	LastSeq  uint64
}

// ArchiveFileName is the archive file of the decisions of a UTC day.
func ArchiveFileName(day time.Time) string {
	return "journal-" + day.UTC().Format(time.DateOnly) + ".jsonl.gz"
}

// Archive moves journal records decided before cutoff, and acked by the
// centre, to daily files in dir. It archives a prefix of the journal: it
// stops at the first record that is newer or still in the outbox, so the
// archive and the live journal together stay in sequence order.
func (s *Store) Archive(dir string, cutoff time.Time) (ArchiveResult, error) {
	var res ArchiveResult
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, fmt.Errorf("create archive directory: %w", err)
	}
	for {
		recs, day, err := s.archivable(cutoff)
		if err != nil || len(recs) == 0 {
			return res, err
		}
		name := ArchiveFileName(day)
		if err := s.archiveStep(dir, name, recs); err != nil {
			return res, fmt.Errorf("archive journal to %s: %w", filepath.Join(dir, name), err)
		}
		if res.FirstSeq == 0 {
			res.FirstSeq = recs[0].seq
		}
		res.LastSeq = recs[len(recs)-1].seq
		res.Records += len(recs)
		if len(res.Files) == 0 || res.Files[len(res.Files)-1] != name {
			res.Files = append(res.Files, name)
		}
	}
}

type archRecord struct {
	seq  uint64
	json []byte
}

// archivable reads the next step: up to ArchiveBatch records from the
// start of the journal, all of one UTC day, decided before cutoff and not
// in the outbox.
func (s *Store) archivable(cutoff time.Time) ([]archRecord, time.Time, error) {
	var recs []archRecord
	var day time.Time
	err := s.db.View(func(tx *bolt.Tx) error {
		out := tx.Bucket(bOutbox)
		c := tx.Bucket(bJournal).Cursor()
		for k, v := c.First(); k != nil && len(recs) < ArchiveBatch; k, v = c.Next() {
			if out.Get(k) != nil {
				return nil // not yet at the centre
			}
			var e struct {
				At time.Time `json:"at"`
			}
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("journal record %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if !e.At.Before(cutoff) {
				return nil
			}
			d := e.At.UTC().Truncate(24 * time.Hour)
			if len(recs) == 0 {
				day = d
			} else if !d.Equal(day) {
				return nil // the next day's file: its own step
			}
			recs = append(recs, archRecord{binary.BigEndian.Uint64(k), bytes.Clone(v)})
		}
		return nil
	})
	return recs, day, err
}

// committedSize is an archive file's length the store counts, and whether
// the store wrote to it at all.
func committedSize(tx *bolt.Tx, name string) (int64, bool) {
	b := tx.Bucket(bArchive)
	if b == nil {
		return 0, false
	}
	v := b.Get([]byte(name))
	if len(v) != 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(v)), true
}

func (s *Store) archiveStep(dir, name string, recs []archRecord) error {
	path := filepath.Join(dir, name)
	var size int64
	var known bool
	if err := s.db.View(func(tx *bolt.Tx) error { size, known = committedSize(tx, name); return nil }); err != nil {
		return err
	}
	_, statErr := os.Stat(path)
	created := errors.Is(statErr, os.ErrNotExist)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !known {
		// A file this store has not written to (a new day, or a store
		// provisioned afresh in the same directory): keep what is there,
		// and count it before appending, so a member this run leaves
		// half-done is cut off next time rather than read.
		size = fi.Size()
		if err := s.db.Update(func(tx *bolt.Tx) error { return putCommittedSize(tx, name, size) }); err != nil {
			return err
		}
	}
	switch {
	case fi.Size() > size:
		// A member written by a run that stopped before its delete
		// committed: those records are still in the journal.
		if err := f.Truncate(size); err != nil {
			return err
		}
	case fi.Size() < size:
		return fmt.Errorf("%s is %d bytes, shorter than the %d bytes archived to it: it was cut or replaced; move it aside and run again",
			path, fi.Size(), size)
	}
	if _, err := f.Seek(size, io.SeekStart); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 64<<10)
	zw := gzip.NewWriter(bw)
	for _, r := range recs {
		if _, err := zw.Write(append(r.json, '\n')); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if created {
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	end, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if archiveCrash != nil {
		if err := archiveCrash(); err != nil {
			return err
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		j := tx.Bucket(bJournal)
		for _, r := range recs {
			if err := j.Delete(binary.BigEndian.AppendUint64(nil, r.seq)); err != nil {
				return err
			}
		}
		return putCommittedSize(tx, name, end)
	})
}

func putCommittedSize(tx *bolt.Tx, name string, size int64) error {
	ab, err := tx.CreateBucketIfNotExists(bArchive)
	if err != nil {
		return err
	}
	return ab.Put([]byte(name), binary.BigEndian.AppendUint64(nil, uint64(size)))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ArchivedJournal calls fn for every archived journal record in dir, file
// by file in day order, each in the order archived. Of a file this store
// archived to, it reads only what the store counts as archived (a member
// an interrupted run left is still in the live journal). A file it cannot
// read to the end is an error naming it, after fn saw what could be read.
func (s *Store) ArchivedJournal(dir string, fn func(Decision) error) error {
	names, err := archiveFiles(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		var size int64
		var known bool
		if err := s.db.View(func(tx *bolt.Tx) error { size, known = committedSize(tx, name); return nil }); err != nil {
			return err
		}
		if !known {
			size = -1
		}
		if err := readArchiveFile(filepath.Join(dir, name), size, fn); err != nil {
			return err
		}
	}
	return nil
}

func archiveFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); e.Type().IsRegular() && strings.HasPrefix(n, "journal-") && strings.HasSuffix(n, ".jsonl.gz") {
			names = append(names, n)
		}
	}
	slices.Sort(names) // journal-YYYY-MM-DD: name order is day order
	return names, nil
}

// readArchiveFile reads one archive file, its first limit bytes (all of
// it when limit < 0).
func readArchiveFile(path string, limit int64, fn func(Decision) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReaderSize(f, 64<<10)
	if limit >= 0 {
		r = io.LimitReader(r, limit)
	}
	zr, err := gzip.NewReader(r)
	if errors.Is(err, io.EOF) {
		return nil // empty file
	}
	if err != nil {
		return fmt.Errorf("archive %s: %w", path, err)
	}
	br := bufio.NewReaderSize(zr, 64<<10)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && err == nil {
			var e Decision
			if jerr := json.Unmarshal(line, &e); jerr != nil {
				return fmt.Errorf("archive %s line %d: %w", path, n, jerr)
			}
			if ferr := fn(e); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				return fmt.Errorf("archive %s: ends inside line %d", path, n)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("archive %s after %d records: %w", path, n-1, err)
		}
	}
}

// pruneScan bounds the uses one PruneUses transaction looks at.
const pruneScan = 4096

// PruneUses deletes the uses of tickets whose whitelist entry expired
// before cutoff; it returns how many. A use is the single-use guarantee,
// so it stays while its ticket can still be valid: a ticket missing from
// the whitelist (non-strict gates admit those), or without an end of
// validity, keeps its use for good. The entry's end is the current
// serial's: an older serial is refused as superseded, used or not.
func (s *Store) PruneUses(cutoff time.Time) (int, error) {
	n := 0
	var after []byte
	for {
		var next []byte
		err := s.db.Update(func(tx *bolt.Tx) error {
			used, tickets := tx.Bucket(bUsed), tx.Bucket(bTickets)
			var expired [][]byte
			c := used.Cursor()
			k, _ := c.First()
			if after != nil {
				if k, _ = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, _ = c.Next()
				}
			}
			for i := 0; k != nil && i < pruneScan; k, _ = c.Next() {
				i++
				next = bytes.Clone(k)
				v := tickets.Get(k)
				if v == nil || len(k) != len(verify.TicketID{}) {
					continue
				}
				e, err := decodeEntry(verify.TicketID(k), v)
				if err != nil {
					continue // a damaged entry proves nothing: keep the use
				}
				if !e.NotAfter.IsZero() && e.NotAfter.Before(cutoff) {
					expired = append(expired, next)
				}
			}
			if k == nil {
				next = nil
			}
			// Deleting under a moving cursor skips keys in bbolt; delete after.
			for _, k := range expired {
				if err := used.Delete(k); err != nil {
					return err
				}
			}
			n += len(expired)
			return nil
		})
		if err != nil || next == nil {
			return n, err
		}
		after = next
	}
}
