package cache

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/gated-dev/gated/internal/ratelog"
	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the layout of the store this code reads and writes.
const SchemaVersion = 1

// FileName is the store's file inside a gate's data directory.
const FileName = "gate.db"

var (
	bMeta        = []byte("meta")
	bTickets     = []byte("tickets")
	bRevocations = []byte("revocations")
	bUsed        = []byte("used")
	bCodes       = []byte("codes")
	bJournal     = []byte("journal")
	bOutbox      = []byte("outbox")
	allBuckets   = [][]byte{bMeta, bTickets, bRevocations, bUsed, bCodes, bJournal, bOutbox}

	kSchema        = []byte("schema")
	kInstance      = []byte("instance")
	kRoot          = []byte("root")
	kEvent         = []byte("event")
	kBundleVersion = []byte("bundle_version")
	kBundleCreated = []byte("bundle_created")
	kTrust         = []byte("trust")
)

// Errors callers branch on.
var (
	// ErrSchema means the file was written by a gated with another layout.
	ErrSchema = errors.New("store schema version mismatch")
	// ErrNotProvisioned means no bundle has been loaded yet.
	ErrNotProvisioned = errors.New("gate is not provisioned")
	// ErrOlderBundle refuses a bundle older than the one loaded.
	ErrOlderBundle = errors.New("bundle is older than the one loaded")
	// ErrOtherEvent refuses a bundle for another event than the store's.
	ErrOtherEvent = errors.New("bundle is for another event")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("store is closed")
	// ErrLocked means another process has the store open.
	ErrLocked = errors.New("store is in use by another process")
	// ErrDamaged means the store file cannot be read as a gate store: it is
	// empty, cut short, or has a damaged page. The file is left as it is;
	// `gated salvage` copies out what can still be read.
	ErrDamaged = errors.New("store file is damaged")
	// ErrNoStore means there is no store file and Options.MustExist was set.
	ErrNoStore = errors.New("no gate store")
)

// damagedAdvice is what a person does about ErrDamaged, in English and Chinese.
const damagedAdvice = "do not delete it; run `gated salvage --data DIR --out FILE` to copy out the journal, " +
	"then provision a fresh --data directory and import the salvage. " +
	"存储文件已损坏：请勿删除；运行 gated salvage 导出记录，然后在新的数据目录中重新配置并导入"

func damaged(path, why string) error {
	return fmt.Errorf("%w: %s: %s; %s", ErrDamaged, path, why, damagedAdvice)
}

// Options tune Open. The zero value is the safe default.
type Options struct {
	// Timeout is how long Open waits for another process to release the
	// file (default 2s).
	Timeout time.Duration
	// NoSync skips fsync on commit. Only for benchmarks: a power cut may
	// then lose signalled decisions.
	NoSync bool
	// MaxBatch bounds how many scans share one commit (default 128).
	MaxBatch int
	// Logger receives storage errors (default: discard).
	Logger *slog.Logger
	// OpenFile opens the store file (default os.OpenFile). It is bbolt's
	// seam: tests open the file through a fault-injecting filesystem.
	OpenFile func(name string, flag int, perm os.FileMode) (*os.File, error)
	// MustExist refuses to create a store: every gated command but
	// provision sets it, so a missing file is an error, not a new store.
	MustExist bool
	// LiveDelay bounds how often writes that join the group commit
	// without a scan (other gates' admissions, see joinCommit) commit on
	// their own: at most once per LiveDelay (default 100ms), so the gate's
	// fsyncs do not grow with the venue's admission rate.
	LiveDelay time.Duration
	// Now is the clock of the store's health record (default time.Now).
	Now func() time.Time
	// Reserve is how many bytes of disk the store keeps allocated in a
	// file of its own (ReserveName) and frees when a commit finds the disk
	// full, so the decisions after it, and the record of the fault, can
	// still be written (default 8 MiB; negative: no reserve).
	Reserve int64
	// LogEvery is how often a repeating storage error is logged: once,
	// then once per LogEvery with the count held back (default 10s).
	LogEvery time.Duration
}

// ReserveName is the space reserve's file in the data directory.
const ReserveName = "gate.reserve"

// Store is an open gate store. Its methods are safe for concurrent use.
type Store struct {
	db        *handle
	opts      Options
	log       *slog.Logger
	instance  string
	maxBatch  int
	liveDelay time.Duration
	reqs      chan *request
	quit      chan struct{}
	done      chan struct{}

	rl       *ratelog.Limiter
	healthMu sync.Mutex
	health   Health
	// reserveOut is when the space reserve was released; zero while held.
	reserveOut time.Time
}

// Open opens the store in dir, or creates it unless o.MustExist. It refuses
// a file that is empty, cut short or damaged with ErrDamaged, never
// replacing it.
func Open(dir string, o *Options) (*Store, error) {
	var opts Options
	if o != nil {
		opts = *o
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 128
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LiveDelay <= 0 {
		opts.LiveDelay = 100 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Reserve == 0 {
		opts.Reserve = 8 << 20
	}
	if opts.OpenFile == nil {
		opts.OpenFile = os.OpenFile
	}
	path := filepath.Join(dir, FileName)
	if !opts.MustExist {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
	}
	db, err := openBolt(path, &opts)
	if err != nil {
		return nil, err
	}
	s := &Store{db: newHandle(db), opts: opts, log: opts.Logger, maxBatch: opts.MaxBatch, liveDelay: opts.LiveDelay,
		reqs: make(chan *request), quit: make(chan struct{}), done: make(chan struct{}), health: Health{OK: true},
		rl: ratelog.New(opts.LogEvery, opts.Now)}
	if err := s.init(path); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.holdReserve(); err != nil {
		// Unhealthy until the watchdog's probe can allocate it: a gate
		// restarted on a full disk must not say "ok".
		s.setReserve(false)
		s.log.Error("cannot reserve disk space for the store; free space on the gate's disk", "err", err, "bytes", opts.Reserve)
	}
	go s.loop()
	return s, nil
}

// minFileSize is the smallest file bbolt writes: two meta pages, a
// freelist page and an empty root leaf, at the smallest page size.
const minFileSize = 4 * 1024

// openBolt opens the bbolt file, refusing a damaged one with ErrDamaged.
// bbolt panics when it meets a damaged page, and faults when the file is
// shorter than its pages say: both are caught here, at the open boundary
// (and in every transaction, see handle), and so are files too short or
// empty (bbolt would silently write a new store into an empty file).
func openBolt(path string, o *Options) (db *bolt.DB, err error) {
	fi, statErr := os.Stat(path)
	switch {
	case errors.Is(statErr, fs.ErrNotExist) && o.MustExist:
		return nil, fmt.Errorf("%w at %s: provision it first with `gated provision --data DIR BUNDLE` "+
			"(没有门禁存储：请先运行 gated provision)", ErrNoStore, path)
	case statErr == nil && !fi.Mode().IsRegular():
		return nil, fmt.Errorf("open store %s: not a regular file", path)
	case statErr == nil && fi.Size() == 0:
		return nil, damaged(path, "the file is empty (zero length)")
	case statErr == nil && fi.Size() < minFileSize:
		return nil, damaged(path, fmt.Sprintf("the file is cut short (%d bytes)", fi.Size()))
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, damaged(path, fmt.Sprint(r))
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout: o.Timeout,
		// The freelist is written with every commit (one more page in the
		// same write, no extra fsync) rather than rebuilt on open: bbolt
		// rebuilds it on a goroutine of its own, where a damaged page is a
		// panic no recover can catch, and by reading every page.
		NoFreelistSync: false,
		FreelistType:   bolt.FreelistMapType,
		OpenFile:       o.OpenFile,
	})
	switch {
	case errors.Is(err, bolterr.ErrTimeout):
		return nil, fmt.Errorf("%w: %s (stop the other gated, or use another --data)", ErrLocked, path)
	case errors.Is(err, bolterr.ErrInvalid), errors.Is(err, bolterr.ErrChecksum), errors.Is(err, bolterr.ErrVersionMismatch),
		err != nil && strings.Contains(err.Error(), "file size too small"):
		return nil, damaged(path, err.Error())
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db.NoSync = o.NoSync
	if statErr == nil {
		// A file cut short at a page boundary opens; its pages past the
		// end would fault on first read.
		var hw int64
		db.View(func(tx *bolt.Tx) error { hw = tx.Size(); return nil })
		if fi, err := os.Stat(path); err == nil && fi.Size() < hw {
			db.Close()
			return nil, damaged(path, fmt.Sprintf("the file is cut short: %d bytes, its pages reach %d", fi.Size(), hw))
		}
	}
	return db, nil
}

func (s *Store) init(path string) error {
	// A store that has everything is only read: opening one for status or
	// journal writes nothing, so a damaged file is not written over.
	ready := false
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if tx.Bucket(b) == nil {
				return nil
			}
		}
		m := tx.Bucket(bMeta)
		if v := m.Get(kSchema); v == nil || string(v) != fmt.Sprint(SchemaVersion) || m.Get(kInstance) == nil {
			return nil
		}
		s.instance, ready = string(m.Get(kInstance)), true
		return nil
	})
	if err != nil || ready {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		if meta == nil {
			empty := true
			tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
			if !empty {
				return fmt.Errorf("%s is a bbolt file but not a gate store", path)
			}
		} else if v := meta.Get(kSchema); v != nil {
			if string(v) != fmt.Sprint(SchemaVersion) {
				return fmt.Errorf("%w: %s has schema %s, this gated reads %d; use the gated release that wrote it, or provision a fresh --data directory",
					ErrSchema, path, v, SchemaVersion)
			}
		}
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta = tx.Bucket(bMeta)
		if meta.Get(kSchema) == nil {
			if err := meta.Put(kSchema, []byte(fmt.Sprint(SchemaVersion))); err != nil {
				return err
			}
		}
		if v := meta.Get(kInstance); v != nil {
			s.instance = string(v)
		} else {
			var r [6]byte
			rand.Read(r[:])
			s.instance = hex.EncodeToString(r[:])
			if err := meta.Put(kInstance, []byte(s.instance)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Close finishes the scans in flight, then closes the file.
func (s *Store) Close() error {
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	<-s.done
	return s.db.Close()
}

// Path is the store's file.
func (s *Store) Path() string { return s.db.Path() }

// State is what a gate needs to verify tickets: the loaded bundle's identity
// and trust list.
type State struct {
	Root          ed25519.PublicKey
	Event         string
	BundleVersion uint64
	BundleCreated time.Time
	Trust         *verify.TrustList
	TrustEnvelope *verify.Envelope
}

// State reads the provisioned state; ErrNotProvisioned if there is none.
func (s *Store) State() (*State, error) {
	var st State
	err := s.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bMeta)
		if m.Get(kRoot) == nil {
			return ErrNotProvisioned
		}
		st.Root = ed25519.PublicKey(bytes.Clone(m.Get(kRoot)))
		st.Event = string(m.Get(kEvent))
		st.BundleVersion = binary.BigEndian.Uint64(m.Get(kBundleVersion))
		st.BundleCreated = time.Unix(0, int64(binary.BigEndian.Uint64(m.Get(kBundleCreated)))).UTC()
		var env verify.Envelope
		if err := json.Unmarshal(m.Get(kTrust), &env); err != nil {
			return fmt.Errorf("stored trust list: %w", err)
		}
		st.TrustEnvelope = &env
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Verified again on every start: the file is outside input too.
	tl, err := verify.OpenTrustList(st.TrustEnvelope, st.Root)
	if err != nil {
		return nil, fmt.Errorf("stored trust list: %w", err)
	}
	st.Trust = tl
	return &st, nil
}

// ProvisionResult summarises what a bundle changed.
type ProvisionResult struct {
	Event       string
	Version     uint64
	Tickets     int
	Revocations int
	FirstRoot   bool // the root key was pinned by this bundle
}

// Provision verifies a bundle file and loads it in one transaction: the
// trust list, whitelist and revocations are replaced; used tickets and the
// journal stay. The first bundle pins its root key.
func (s *Store) Provision(data []byte) (*ProvisionResult, error) {
	var pinned ed25519.PublicKey
	if st, err := s.State(); err == nil {
		pinned = st.Root
	} else if !errors.Is(err, ErrNotProvisioned) {
		return nil, err
	}
	b, _, root, err := verify.OpenBundle(data, pinned)
	if err != nil {
		return nil, err
	}
	res := &ProvisionResult{Event: b.Event, Version: b.Version, Tickets: len(b.Tickets), Revocations: len(b.Revocations), FirstRoot: pinned == nil}
	trustJSON, err := json.Marshal(b.TrustList)
	if err != nil {
		return nil, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bMeta)
		if ev := m.Get(kEvent); ev != nil && string(ev) != b.Event {
			return fmt.Errorf("%w: this gate holds event %q, the bundle is for %q; provision a fresh --data directory for the new event",
				ErrOtherEvent, ev, b.Event)
		}
		if v := m.Get(kBundleVersion); v != nil && binary.BigEndian.Uint64(v) > b.Version {
			return fmt.Errorf("%w: loaded version %d, bundle version %d; export a new bundle at the centre",
				ErrOlderBundle, binary.BigEndian.Uint64(v), b.Version)
		}
		put := func(k, v []byte) error { return m.Put(k, v) }
		if err := put(kRoot, root); err != nil {
			return err
		}
		if err := put(kEvent, []byte(b.Event)); err != nil {
			return err
		}
		if err := put(kBundleVersion, binary.BigEndian.AppendUint64(nil, b.Version)); err != nil {
			return err
		}
		if err := put(kBundleCreated, binary.BigEndian.AppendUint64(nil, uint64(b.CreatedAt.UnixNano()))); err != nil {
			return err
		}
		if err := put(kTrust, trustJSON); err != nil {
			return err
		}
		if err := replaceBucket(tx, bTickets); err != nil {
			return err
		}
		tb := tx.Bucket(bTickets)
		tb.FillPercent = 0.9 // ids are random; most inserts land mid-page
		for i := range b.Tickets {
			e := &b.Tickets[i]
			if err := tb.Put(e.ID[:], encodeEntry(e)); err != nil {
				return err
			}
		}
		if err := replaceBucket(tx, bRevocations); err != nil {
			return err
		}
		rb := tx.Bucket(bRevocations)
		for _, r := range b.Revocations {
			v, _ := json.Marshal(r)
			if err := rb.Put(r.ID[:], v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func replaceBucket(tx *bolt.Tx, name []byte) error {
	if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, bolterr.ErrBucketNotFound) {
		return err
	}
	_, err := tx.CreateBucket(name)
	return err
}

// Entry returns the whitelist entry of a ticket, or nil.
func (s *Store) Entry(id verify.TicketID) (*verify.TicketEntry, error) {
	var e *verify.TicketEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bTickets).Get(id[:]); v != nil {
			var err error
			e, err = decodeEntry(id, v)
			return err
		}
		return nil
	})
	return e, err
}

// Stats counts what the store holds.
type Stats struct {
	Tickets, Revocations, Used, Journal, Outbox int
	LastSeq                                     uint64
}

// Stats reads the counts.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.db.View(func(tx *bolt.Tx) error {
		st.Tickets = tx.Bucket(bTickets).Stats().KeyN
		st.Revocations = tx.Bucket(bRevocations).Stats().KeyN
		st.Used = tx.Bucket(bUsed).Stats().KeyN
		st.Journal = tx.Bucket(bJournal).Stats().KeyN
		st.Outbox = tx.Bucket(bOutbox).Stats().KeyN
		st.LastSeq = tx.Bucket(bJournal).Sequence()
		return nil
	})
	return st, err
}

// Check walks every page of the store (bbolt's consistency check) and
// returns ErrDamaged naming the first problems found. It reads the whole
// file: for gated doctor and salvage, not for every open.
func (s *Store) Check() error {
	var problems []string
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			if len(problems) < 5 {
				problems = append(problems, err.Error())
			}
		}
		return nil
	})
	if err != nil {
		return damaged(s.db.Path(), err.Error())
	}
	if len(problems) > 0 {
		return damaged(s.db.Path(), strings.Join(problems, "; "))
	}
	return nil
}
