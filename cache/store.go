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
	"log/slog"
	"os"
	"path/filepath"
	"time"

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
)

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
}

// Store is an open gate store. Its methods are safe for concurrent use.
type Store struct {
	db       *bolt.DB
	log      *slog.Logger
	instance string
	maxBatch int
	reqs     chan *request
	quit     chan struct{}
	done     chan struct{}
}

// Open opens or creates the store in dir.
func Open(dir string, o *Options) (*Store, error) {
	if o == nil {
		o = &Options{}
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 128
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        o.Timeout,
		NoFreelistSync: true, // the freelist is rebuilt on open; commits write less
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterr.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (stop the other gated, or use another --data)", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db.NoSync = o.NoSync
	s := &Store{db: db, log: o.Logger, maxBatch: o.MaxBatch,
		reqs: make(chan *request), quit: make(chan struct{}), done: make(chan struct{})}
	if err := s.init(path); err != nil {
		db.Close()
		return nil, err
	}
	go s.loop()
	return s, nil
}

func (s *Store) init(path string) error {
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
