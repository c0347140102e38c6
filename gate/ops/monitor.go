// Package ops is the gate's operational surface: a Monitor that watches
// every committed decision, the scanners and the sync link, and the local
// HTTP endpoints built on it (/healthz, /metrics for Prometheus, /status as
// JSON). The staff console (package console) reads the same Status.
//
// The Monitor is a gate.Signaller, so it sees a decision only after it was
// committed: its counts never run ahead of the journal.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
)

// Store is what the monitor reads of the gate's store (cache.Store).
// SyncState, not Stats: Stats walks every page of the whitelist, which on
// a gate with a million tickets is too much to do every second.
type Store interface {
	SyncState() (cache.SyncState, error)
	Outbox(after uint64, max int) ([]cache.Outgoing, error)
}

// StorageHealth is the optional capability of a Store that knows whether
// its disk takes commits (cache.Store): a failing disk makes the gate
// unhealthy. Probe retries a commit; the watchdog check calls it while the
// store is unhealthy, so a disk that works again clears the fault.
type StorageHealth interface {
	Health() cache.Health
	Probe() error
}

// Sync is what the monitor reads of the sync link (gatelink.Link). A link
// that also has LastSync() time.Time (the last message exchanged with the
// centre) gets its age shown; see LastSyncer.
type Sync interface {
	Connected() bool
}

// LastSyncer is the optional capability of a Sync that knows when it last
// heard from the centre.
type LastSyncer interface {
	LastSync() time.Time
}

// Connecter is the optional capability of a scanner source that knows
// whether its device is there (a serial or HID scanner unplugged). A
// source without it counts as up while it runs.
type Connecter interface {
	Connected() bool
}

// Options configure a Monitor. Zero values are the defaults.
type Options struct {
	Gate, Event string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger gets failures to read the store (default: discard).
	Logger *slog.Logger
	// Recent is how many decisions Status keeps (default 8).
	Recent int
}

// Monitor follows the gate. It is safe for concurrent use; Signal is
// called by every scanner's goroutine.
type Monitor struct {
	o       Options
	started time.Time
	metrics *Metrics

	mu       sync.Mutex
	store    Store
	sync     Sync
	scanners map[string]*scannerState
	byReason map[verify.Reason]int
	admitted int
	denied   int
	recent   []cache.Decision // newest last
	// synced is the last time the link was up with the outbox empty: the
	// centre had every decision. Used when the link cannot say LastSync.
	synced time.Time
	clock  Clock
}

type scannerState struct {
	src     any // for Connecter
	running bool
	err     string
	since   time.Time
}

// NewMonitor returns a monitor with its Prometheus metrics.
func NewMonitor(o Options) *Monitor {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Recent <= 0 {
		o.Recent = 8
	}
	m := &Monitor{o: o, started: o.Now(), scanners: map[string]*scannerState{}, byReason: map[verify.Reason]int{}}
	m.metrics = newMetrics(m)
	return m
}

// Metrics returns the monitor's Prometheus metrics.
func (m *Monitor) Metrics() *Metrics { return m.metrics }

// SetStore tells the monitor the store is open; until then the gate is
// not ready.
func (m *Monitor) SetStore(s Store) {
	m.mu.Lock()
	m.store = s
	m.mu.Unlock()
}

// SetEvent records the event the loaded bundle is for.
func (m *Monitor) SetEvent(event string) {
	m.mu.Lock()
	m.o.Event = event
	m.mu.Unlock()
}

// SetSync attaches the sync link; without one the gate is offline by design.
func (m *Monitor) SetSync(s Sync) {
	m.mu.Lock()
	m.sync = s
	m.mu.Unlock()
}

// ScannerStarted records that a source's Run began. src may implement Connecter.
func (m *Monitor) ScannerStarted(name string, src any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.scanners[name] = &scannerState{src: src, running: true, since: m.o.Now()}
}

// ScannerStopped records that a source's Run returned, with its error.
func (m *Monitor) ScannerStopped(name string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.scanners[name]
	if s == nil {
		s = &scannerState{}
		m.scanners[name] = s
	}
	s.running, s.since, s.src = false, m.o.Now(), nil
	s.err = ""
	if err != nil {
		s.err = err.Error()
	}
}

// ScannerRemoved forgets a source taken out of the configuration.
func (m *Monitor) ScannerRemoved(name string) {
	m.mu.Lock()
	delete(m.scanners, name)
	m.mu.Unlock()
}

// Signal implements gate.Signaller: it counts a committed decision.
func (m *Monitor) Signal(e cache.Decision) {
	now := m.o.Now()
	m.mu.Lock()
	if e.Verdict == cache.Admit {
		m.admitted++
	} else {
		m.denied++
	}
	m.byReason[e.Reason]++
	m.recent = append(m.recent, e)
	if len(m.recent) > m.o.Recent {
		m.recent = slices.Delete(m.recent, 0, len(m.recent)-m.o.Recent)
	}
	m.mu.Unlock()
	m.metrics.observe(e, now)
}

// Status is the gate at one moment: what /status serves and the staff
// console shows.
type Status struct {
	Gate    string    `json:"gate"`
	Event   string    `json:"event,omitempty"`
	Now     time.Time `json:"now"`
	Started time.Time `json:"started"`
	// Ready is /healthz: the store is open and a scanner is up.
	Ready    bool           `json:"ready"`
	NotReady string         `json:"not_ready,omitempty"` // why not, in words
	Admitted int            `json:"admitted"`
	Denied   int            `json:"denied"`
	ByReason map[string]int `json:"by_reason"`
	// Last is the latest decision; Recent the latest few, newest last.
	Last   *cache.Decision  `json:"last,omitempty"`
	Recent []cache.Decision `json:"recent"`
	// Sync: Online is nil when no sync link is configured. LastSync is
	// when the gate last heard from the centre, or, when the link cannot
	// tell, when it was last seen online with nothing left to send.
	Online   *bool     `json:"online,omitempty"`
	LastSync time.Time `json:"last_sync,omitzero"`
	Outbox   int       `json:"outbox"`
	// SyncLag is the age of the oldest decision the centre has not
	// acknowledged; 0 when the outbox is empty.
	SyncLag  Seconds         `json:"sync_lag_seconds"`
	Scanners []ScannerStatus `json:"scanners"`
	// StoreError is set when the store could not be read.
	StoreError string `json:"store_error,omitempty"`
	// Storage is whether the store's disk takes commits; nil when the
	// store cannot tell.
	Storage *StorageStatus `json:"storage,omitempty"`
	// Clock is whether the gate trusts its wall clock; nil: not known.
	Clock *ClockStatus `json:"clock,omitempty"`
}

// StorageStatus is the store's disk: OK, or the error of the last failed
// commit (or a released space reserve) and since when.
type StorageStatus struct {
	OK       bool      `json:"ok"`
	Error    string    `json:"error,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	Failures int       `json:"failures,omitempty"`
}

// Seconds is a duration that marshals as seconds.
type Seconds time.Duration

// MarshalJSON implements json.Marshaler.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(s).Seconds())
}

// ScannerStatus is one scanner's health.
type ScannerStatus struct {
	Name  string    `json:"name"`
	Up    bool      `json:"up"`
	State string    `json:"state"` // "up", "not connected", "stopped", "failed: ..."
	Since time.Time `json:"since"`
}

// Status reads the gate's status now. It reads the store (counts, oldest
// outbox record) and may block while the store is busy.
func (m *Monitor) Status() Status {
	m.mu.Lock()
	st := Status{Gate: m.o.Gate, Event: m.o.Event, Now: m.o.Now(), Started: m.started,
		Admitted: m.admitted, Denied: m.denied, ByReason: map[string]int{},
		Recent: slices.Clone(m.recent)}
	for r, n := range m.byReason {
		st.ByReason[string(r)] = n
	}
	if len(st.Recent) > 0 {
		last := st.Recent[len(st.Recent)-1]
		st.Last = &last
	}
	for name, s := range m.scanners {
		st.Scanners = append(st.Scanners, s.status(name))
	}
	store, link, clk := m.store, m.sync, m.clock
	m.mu.Unlock()
	if clk != nil {
		cs := clk.ClockStatus()
		st.Clock = &cs
	}
	sort.Slice(st.Scanners, func(i, j int) bool { return st.Scanners[i].Name < st.Scanners[j].Name })

	if link != nil {
		on := link.Connected()
		st.Online = &on
		if ls, ok := link.(LastSyncer); ok {
			st.LastSync = ls.LastSync()
		}
	}
	if sh, ok := store.(StorageHealth); ok {
		h := sh.Health()
		st.Storage = &StorageStatus{OK: h.OK, Error: h.Err, Since: h.Since, Failures: h.Failures}
	}
	if store != nil {
		if err := st.readStore(store); err != nil {
			m.o.Logger.Error("cannot read the store for status", "err", err)
			st.StoreError = err.Error()
		}
	}
	if st.Online != nil && st.LastSync.IsZero() {
		m.mu.Lock()
		if *st.Online && st.Outbox == 0 && st.StoreError == "" {
			m.synced = st.Now
		}
		st.LastSync = m.synced
		m.mu.Unlock()
	}
	st.NotReady = notReady(store != nil, st)
	st.Ready = st.NotReady == ""
	return st
}

func (s *scannerState) status(name string) ScannerStatus {
	ss := ScannerStatus{Name: name, Since: s.since}
	switch {
	case s.running:
		ss.Up, ss.State = true, "up"
		if c, ok := s.src.(Connecter); ok && !c.Connected() {
			ss.Up, ss.State = false, "not connected"
		}
	case s.err != "":
		ss.State = "failed: " + s.err
	default:
		ss.State = "stopped"
	}
	return ss
}

func (st *Status) readStore(s Store) error {
	ss, err := s.SyncState()
	if err != nil {
		return err
	}
	st.Outbox = ss.Outbox
	if ss.Outbox == 0 {
		return nil
	}
	oldest, err := s.Outbox(0, 1)
	if err != nil || len(oldest) == 0 {
		return err
	}
	var rec struct {
		At time.Time `json:"at"`
	}
	if err := json.Unmarshal(oldest[0].Record, &rec); err != nil {
		return fmt.Errorf("outbox record %d: %w", oldest[0].Seq, err)
	}
	st.SyncLag = Seconds(max(st.Now.Sub(rec.At), 0))
	return nil
}

func notReady(storeOpen bool, st Status) string {
	if !storeOpen {
		return "store not open yet"
	}
	if st.StoreError != "" {
		return "store unreadable: " + st.StoreError
	}
	if st.Storage != nil && !st.Storage.OK {
		return fmt.Sprintf("storage fault since %s: %s; call a supervisor", st.Storage.Since.Format(time.RFC3339), st.Storage.Error)
	}
	for _, s := range st.Scanners {
		if s.Up {
			return ""
		}
	}
	if len(st.Scanners) == 0 {
		return "no scanner running"
	}
	return "no scanner is up (check cables and `gated doctor`)"
}

// Healthy is the watchdog's check: the store answers a read, and its disk
// takes commits (while it does not, a commit is retried here). It does not
// look at scanners, since restarting gated cannot plug a cable back in.
func (m *Monitor) Healthy(ctx context.Context) error {
	m.mu.Lock()
	store := m.store
	m.mu.Unlock()
	if store == nil {
		return errors.New("store not open")
	}
	done := make(chan error, 1)
	go func() {
		if sh, ok := store.(StorageHealth); ok && !sh.Health().OK {
			done <- sh.Probe()
			return
		}
		_, err := store.SyncState()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("store did not answer: %w", ctx.Err())
	}
}
