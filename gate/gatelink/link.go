// Package gatelink is the gate's side of sync: it drains the store's
// outbox to the centre over MQTT and applies what the centre sends back.
//
// Uplink: the bbolt outbox is the only queue that survives. Batches of
// outbox records are published at QoS 1, at most MaxInFlight at a time;
// a record leaves the outbox only when a signed Ack from the centre says
// it is durably stored there. The broker's PUBACK and paho's in-memory
// store prove nothing of the sort, so they are not relied on: after a
// reconnect, a restart or an ack timeout, sending resumes from the first
// record still in the outbox, and the centre drops the duplicates.
//
// Downlink: deltas, snapshots, live admissions from other gates and acks
// are signed by the centre's root key, which the store pins; anything
// that fails verification is logged and ignored. Each change is applied in
// one store transaction with a version check; a gap in delta versions
// makes the gate ask for a resync (a Hello).
//
// The gate never waits for the link: with the broker absent, Run keeps
// retrying in the background and scans are decided as always.
package gatelink

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
)

// Store is what the link needs of the gate's store (cache.Store).
// Its methods must be safe for concurrent use.
type Store interface {
	SyncState() (cache.SyncState, error)
	Outbox(after uint64, max int) ([]cache.Outgoing, error)
	Acknowledge(first, last uint64) (int, error)
	ApplyChange(c *cache.Change) (*verify.TrustList, error)
	StageSnapshot(s *cache.Snapshot) (*cache.Staging, error)
	MarkUsedBatch(ids []verify.TicketID, uses []verify.Use) (int, error)
	UsesCursor() (uint64, error)
	// ApplyUsesQueued stores a run of the uses log without waiting for the
	// disk (cache.Store.ApplyUsesQueued); the link mirrors the cursor.
	ApplyUsesQueued(from, to uint64, ids []verify.TicketID, uses []verify.Use) error
}

// Options configure a Link. Broker, Venue and Gate are required; the zero
// value of every other field is a safe default.
type Options struct {
	// Broker is the broker URL: tcp://HOST:PORT, or ssl://, tls://,
	// mqtts:// for TLS.
	Broker string
	// Venue and Gate name this gate in topics.
	Venue, Gate string
	// Username and Password authenticate at the broker (optional).
	Username, Password string
	// TLS is used for TLS brokers; nil means the system roots.
	TLS *tls.Config
	// BatchSize bounds the entries of one uplink message (default 500).
	BatchSize int
	// MaxInFlight bounds the batches sent and not yet acked (default 4).
	MaxInFlight int
	// AckTimeout is how long to wait for an ack before sending again from
	// the first unacked record (default 15s).
	AckTimeout time.Duration
	// Heartbeat is the retained status interval (default 10s).
	Heartbeat time.Duration
	// SnapshotTimeout drops a snapshot whose chunks stop arriving and asks
	// again (default 60s).
	SnapshotTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger gets sync events (default: discard).
	Logger *slog.Logger
	// OnTrust is called after a new trust list was stored, so the gate can
	// verify with it (gate.SetVerifier).
	OnTrust func(*verify.TrustList)
}

func (o *Options) defaults() error {
	if o.Broker == "" {
		return errors.New("no broker URL")
	}
	if !wire.ValidID(o.Venue) || !wire.ValidID(o.Gate) {
		return fmt.Errorf("venue %q and gate %q must be 1-64 letters, digits, '.', '_' or '-'", o.Venue, o.Gate)
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	o.BatchSize = min(o.BatchSize, wire.MaxBatch)
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 4
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 15 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 10 * time.Second
	}
	if o.SnapshotTimeout <= 0 {
		o.SnapshotTimeout = 60 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Link is a running sync connection. Create it with New, run it with Run.
type Link struct {
	o     Options
	store Store
	log   *slog.Logger
	root  ed25519.PublicKey
	event string
	inst  string

	client mqtt.Client
	nudge  chan struct{}
	conn   chan bool
	acks   chan *wire.Ack
	hello  chan string
	inbox  chan message
	done   chan struct{} // closed when Run stops: nothing reads the channels above any more

	caughtUp     chan struct{} // closed when the first catch-up after Run is complete
	caughtUpOnce sync.Once
	// usesCursor mirrors the store's uses cursor (cache.NextUsesCursor),
	// read once: the downlink goroutine is its only writer, and the store
	// applies its writes in order, so the link need not wait for the disk
	// to know where the log stands.
	usesCursor      uint64
	usesCursorKnown bool
	unreachable     chan struct{} // closed when a connection attempt failed before any succeeded
	unreachOnce     sync.Once

	connected atomic.Bool
	offsetMs  atomic.Int64
	lastSync  atomic.Int64 // unix nanoseconds of the last verified message from the centre

	mu    sync.Mutex
	stats Stats
}

type message struct {
	topic   string
	payload []byte
}

// Stats count what a link did, for status output and tests.
type Stats struct {
	Sent, Acked, Resent  int // entries
	Deltas, Snapshots    int // applied
	LiveUses             int // uses from other gates received (logged uses: queued for the store)
	Rejected             int // downlink messages ignored for failing checks
	Resyncs, AckTimeouts int
}

// New prepares a link for a provisioned store.
func New(store Store, o Options) (*Link, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	st, err := store.SyncState()
	if err != nil {
		return nil, err
	}
	l := &Link{o: o, store: store, log: o.Logger, root: st.Root, event: st.Event, inst: st.Instance,
		nudge: make(chan struct{}, 1), conn: make(chan bool, 8), acks: make(chan *wire.Ack, 64),
		hello: make(chan string, 1), inbox: make(chan message, 256), done: make(chan struct{}), caughtUp: make(chan struct{}),
		unreachable: make(chan struct{})}
	return l, nil
}

// Stats returns the counters so far.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stats
}

func (l *Link) count(f func(*Stats)) {
	l.mu.Lock()
	f(&l.stats)
	l.mu.Unlock()
}

// CaughtUp is closed once the centre answered this link's first hello in
// full: the whitelist changes and every use logged elsewhere as of the
// hello are in the store. A gate starting up waits for it, briefly
// (gated's catchup_wait), before it decides.
func (l *Link) CaughtUp() <-chan struct{} { return l.caughtUp }

// WaitCatchup waits up to d for CaughtUp, and returns at once when the
// broker could not be reached (a gate offline decides on what it holds)
// or ctx ends. It reports whether the catch-up completed.
func (l *Link) WaitCatchup(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.caughtUp:
		return true
	case <-l.unreachable:
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// Connected reports whether the broker connection is up.
func (l *Link) Connected() bool { return l.connected.Load() }

// LastSync is when the last message from the centre that verified
// arrived (zero: none yet). The ops monitor shows its age.
func (l *Link) LastSync() time.Time {
	if n := l.lastSync.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// ClockOffset is the latest estimate of centre clock minus gate clock.
func (l *Link) ClockOffset() time.Duration {
	return time.Duration(l.offsetMs.Load()) * time.Millisecond
}

// Nudge tells the link that the outbox has new records. It never blocks.
func (l *Link) Nudge() {
	select {
	case l.nudge <- struct{}{}:
	default:
	}
}

// Signal makes a Link a gate.Signaller: every committed decision nudges
// the uplink, so an admission reaches the centre (and the other gates)
// at once.
func (l *Link) Signal(cache.Decision) { l.Nudge() }

func (l *Link) topic(kind string) string { return wire.GateTopic(l.o.Venue, l.o.Gate, kind) }

func (l *Link) status(online bool) []byte {
	s := wire.Status{V: wire.Version, Gate: l.o.Gate, Online: online, Instance: l.inst, Event: l.event,
		At: l.o.Now().UTC(), ClockOffsetMs: l.offsetMs.Load()}
	if online {
		if st, err := l.store.SyncState(); err == nil {
			s.Outbox, s.LastSeq, s.WhitelistVersion = st.Outbox, st.LastSeq, st.Version
		}
		if cur, err := l.store.UsesCursor(); err == nil {
			s.Uses = &cur
		}
	}
	b, _ := json.Marshal(s)
	return b
}

// Run connects and syncs until ctx is done, then marks the gate offline
// and disconnects. It returns nil on a clean stop.
func (l *Link) Run(ctx context.Context) error {
	co := mqtt.NewClientOptions().AddBroker(l.o.Broker).
		SetClientID("gated-"+l.o.Venue+"-"+l.o.Gate).
		SetCleanSession(false). // the broker keeps our deltas and live uses while we are away
		SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(5*time.Second).
		SetKeepAlive(15*time.Second).SetPingTimeout(5*time.Second).
		SetConnectTimeout(5*time.Second).SetWriteTimeout(5*time.Second).
		SetOrderMatters(true).
		SetBinaryWill(l.topic(wire.KindStatus), l.status(false), 1, true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { l.receive(ctx, m) }).
		SetOnConnectHandler(func(c mqtt.Client) { l.onConnect(c) }).
		SetConnectionNotificationHandler(func(_ mqtt.Client, n mqtt.ConnectionNotification) {
			switch n.(type) {
			case mqtt.ConnectionNotificationBrokerFailed, mqtt.ConnectionNotificationFailed:
				if !l.connected.Load() {
					l.unreachOnce.Do(func() { close(l.unreachable) })
				}
			}
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			l.log.Warn("broker connection lost", "err", err)
			l.connected.Store(false)
			l.connEvent(false)
		})
	if l.o.Username != "" {
		co.SetUsername(l.o.Username).SetPassword(l.o.Password)
	}
	if l.o.TLS != nil {
		co.SetTLSConfig(l.o.TLS)
	}
	l.client = mqtt.NewClient(co)
	l.client.Connect() // with ConnectRetry this never gives up; we do not wait for it
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); l.downlink(ctx) }()
	l.uplink(ctx)
	close(l.done)
	wg.Wait()
	if l.client.IsConnected() {
		t := l.client.Publish(l.topic(wire.KindStatus), 1, true, l.status(false))
		t.WaitTimeout(2 * time.Second)
	}
	l.client.Disconnect(500)
	return nil
}

// receive runs on paho's router goroutine: it must not call paho, so it
// only queues. Blocking here when the queue is full slows the broker down
// for this client, which is the back-pressure we want during a snapshot.
func (l *Link) receive(ctx context.Context, m mqtt.Message) {
	select {
	case l.inbox <- message{topic: m.Topic(), payload: m.Payload()}:
	case <-ctx.Done():
	}
}

func (l *Link) onConnect(c mqtt.Client) {
	subs := map[string]byte{
		l.topic(wire.KindAck): 1, l.topic(wire.KindSync): 1,
		wire.VenueTopic(l.o.Venue, wire.KindWhitelist): 1, wire.VenueTopic(l.o.Venue, wire.KindLive): 1,
	}
	t := c.SubscribeMultiple(subs, nil)
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		l.log.Error("subscribe failed", "err", t.Error())
	}
	l.log.Info("connected to broker", "broker", l.o.Broker)
	l.connected.Store(true)
	l.connEvent(true)
}

// connEvent hands a connection change to the uplink; paho's callbacks must not
// block once the uplink has stopped.
func (l *Link) connEvent(up bool) {
	select {
	case l.conn <- up:
	case <-l.done:
	}
}

func (l *Link) requestResync(reason string) {
	l.count(func(s *Stats) { s.Resyncs++ })
	select {
	case l.hello <- reason:
	default:
	}
}

// snapshot is one being received. Its chunks go to the store's staging as
// they arrive, so the gate never holds more than one of them.
type snapshot struct {
	m       *wire.Manifest
	stage   *cache.Staging
	chunks  []bool // staged, by index: a chunk sent twice is written once
	have    int
	started time.Time
}

func (l *Link) downlink(ctx context.Context) {
	var snap *snapshot
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if snap != nil && l.o.Now().Sub(snap.started) > l.o.SnapshotTimeout {
				l.log.Warn("snapshot incomplete: asking again", "version", snap.m.Version, "have", snap.have, "chunks", len(snap.chunks))
				snap = nil
				l.requestResync("chunks")
			}
		case m := <-l.inbox:
			if err := l.handle(m, &snap); err != nil {
				l.count(func(s *Stats) { s.Rejected++ })
				l.log.Warn("ignored downlink message", "topic", m.topic, "bytes", len(m.payload), "err", err)
			} else if !wire.IsChunk(m.payload) || snap != nil { // a stray chunk proves nothing
				l.lastSync.Store(l.o.Now().UnixNano())
			}
		}
	}
}

// handle processes one downlink message; an error means it was refused.
func (l *Link) handle(m message, snap **snapshot) error {
	t, err := wire.ParseTopic(m.topic)
	if err != nil {
		return err
	}
	if t.Venue != l.o.Venue || (t.Gate != "" && t.Gate != l.o.Gate) {
		return fmt.Errorf("topic is not this gate's")
	}
	switch t.Kind {
	case wire.KindAck:
		a, err := wire.OpenAck(m.payload, l.root, l.o.Venue, l.o.Gate)
		if err != nil {
			return err
		}
		select {
		case l.acks <- a:
		case <-l.done:
		}
		return nil
	case wire.KindWhitelist:
		d, err := wire.OpenDelta(m.payload, l.root)
		if err != nil {
			return err
		}
		return l.applyDelta(d)
	case wire.KindLive:
		if wire.PeekType(m.payload) == wire.TypeUses {
			u, err := wire.OpenUses(m.payload, l.root, l.o.Venue, l.o.Gate)
			if err != nil {
				return err
			}
			return l.applyUses(u)
		}
		lv, err := wire.OpenLive(m.payload, l.root, l.o.Venue)
		if err != nil {
			return err
		}
		return l.applyLive(lv)
	case wire.KindSync:
		if wire.IsChunk(m.payload) {
			return l.chunk(m.payload, snap)
		}
		switch wire.PeekType(m.payload) {
		case wire.TypeUses:
			u, err := wire.OpenUses(m.payload, l.root, l.o.Venue, l.o.Gate)
			if err != nil {
				return err
			}
			if u.Gate == "" {
				return errors.New("venue-wide uses on a gate's sync topic")
			}
			return l.applyUses(u)
		case wire.TypeDelta:
			d, err := wire.OpenDelta(m.payload, l.root)
			if err != nil {
				return err
			}
			return l.applyDelta(d)
		default:
			mf, err := wire.OpenManifest(m.payload, l.root, l.o.Venue, l.o.Gate)
			if err != nil {
				return err
			}
			return l.manifest(mf, snap)
		}
	}
	return fmt.Errorf("gates do not read %s messages", t.Kind)
}

func (l *Link) applyDelta(d *wire.Delta) error {
	if d.Event != l.event {
		return nil // another event's gates share the venue
	}
	if d.Snapshot {
		if st, err := l.store.SyncState(); err == nil && st.Version < d.Version {
			l.requestResync("snapshot")
		}
		return nil
	}
	tl, err := l.store.ApplyChange(&cache.Change{Event: d.Event, Prev: d.Prev, Version: d.Version,
		Tickets: d.Tickets, Revocations: d.Revocations, TrustList: d.TrustList})
	switch {
	case errors.Is(err, cache.ErrStale):
		l.log.Debug("delta already held", "version", d.Version)
		return nil
	case errors.Is(err, cache.ErrGap):
		l.log.Info("missed a whitelist change: asking for a resync", "err", err)
		l.requestResync("gap")
		return nil
	case err != nil:
		return fmt.Errorf("apply delta %d: %w", d.Version, err)
	}
	l.count(func(s *Stats) { s.Deltas++ })
	l.log.Info("whitelist delta applied", "version", d.Version, "tickets", len(d.Tickets),
		"revocations", len(d.Revocations), "trust_list", d.TrustList != nil)
	if tl != nil && l.o.OnTrust != nil {
		l.o.OnTrust(tl)
	}
	return nil
}

func (l *Link) applyLive(lv *wire.Live) error {
	if lv.Event != l.event {
		return nil
	}
	var ids []verify.TicketID
	var uses []verify.Use
	for _, u := range lv.Uses {
		if u.Gate == l.o.Gate {
			continue // our own admission, already in our store
		}
		ids = append(ids, u.Ticket)
		uses = append(uses, verify.Use{Seq: u.Seq, At: u.At, Gate: u.Gate})
	}
	if len(ids) == 0 {
		return nil
	}
	n, err := l.store.MarkUsedBatch(ids, uses)
	if err != nil {
		return fmt.Errorf("store uses from other gates: %w", err)
	}
	l.count(func(s *Stats) { s.LiveUses += n })
	l.log.Debug("admissions at other gates stored", "new", n, "uses", len(ids))
	return nil
}

// applyUses stores a run of the event's uses log and advances the cursor
// over it in one transaction. A run that starts past the cursor means a
// fan-out was missed (a broker that dropped it, a gate away): the gate
// asks for the log from its cursor. A catch-up page that says More asks
// for the next round; one that does not completes the catch-up.
func (l *Link) applyUses(u *wire.Uses) error {
	if u.Event != l.event {
		return nil // another event's gates share the venue
	}
	ids := make([]verify.TicketID, len(u.Uses))
	uses := make([]verify.Use, len(u.Uses))
	for i, x := range u.Uses {
		// Our own admissions too: a re-provisioned store lacks its earlier ones.
		ids[i], uses[i] = x.Ticket, verify.Use{Seq: x.Seq, At: x.At, Gate: x.Gate}
	}
	from := u.From
	if u.Restart {
		l.log.Warn("the centre's uses log restarted below this gate's cursor: catching up from its start")
		from = 0
	}
	if !l.usesCursorKnown {
		c, err := l.store.UsesCursor()
		if err != nil {
			return fmt.Errorf("read the uses cursor: %w", err)
		}
		l.usesCursor, l.usesCursorKnown = c, true
	}
	// Queued, not waited for: a gate that is not scanning commits joined
	// writes at most once per LiveDelay, and waiting for each message
	// would hold it to that many messages a second in a busy venue.
	if err := l.store.ApplyUsesQueued(from, u.To, ids, uses); err != nil {
		return fmt.Errorf("store uses from other gates: %w", err)
	}
	cursor := cache.NextUsesCursor(l.usesCursor, from, u.To)
	l.usesCursor = cursor
	l.count(func(s *Stats) { s.LiveUses += len(ids) })
	l.log.Debug("logged uses queued", "from", u.From, "to", u.To, "uses", len(ids), "cursor", cursor)
	switch {
	case u.From > cursor+1:
		l.log.Info("missed admissions at other gates: asking for the uses log", "cursor", cursor, "from", u.From)
		l.requestResync("uses")
	case u.More:
		l.requestResync("uses")
	case u.Gate != "" && cursor >= u.Head:
		l.log.Info("uses log caught up", "cursor", cursor)
		l.caughtUpOnce.Do(func() { close(l.caughtUp) })
	}
	return nil
}

func (l *Link) manifest(m *wire.Manifest, snap **snapshot) error {
	if m.Event != l.event {
		return fmt.Errorf("snapshot for event %q, this gate holds %q", m.Event, l.event)
	}
	st, err := l.store.SyncState()
	if err != nil {
		return err
	}
	if m.Version <= st.Version {
		l.log.Debug("snapshot not newer than the store", "version", m.Version, "have", st.Version)
		return nil
	}
	// Staging drops whatever an earlier, unfinished snapshot staged.
	stage, err := l.store.StageSnapshot(&cache.Snapshot{Event: m.Event, Version: m.Version, CreatedAt: m.CreatedAt,
		TrustList: m.TrustList})
	if errors.Is(err, cache.ErrStale) {
		return nil
	}
	if err != nil {
		*snap = nil
		return fmt.Errorf("stage snapshot %d: %w", m.Version, err)
	}
	*snap = &snapshot{m: m, stage: stage, chunks: make([]bool, len(m.Chunks)), started: l.o.Now()}
	l.log.Info("receiving snapshot", "version", m.Version, "tickets", m.Tickets, "chunks", len(m.Chunks))
	return l.maybeApply(snap)
}

func (l *Link) chunk(b []byte, snap **snapshot) error {
	s := *snap
	if s == nil {
		return nil // a chunk of a snapshot we dropped or already applied
	}
	i, recs, err := wire.ParseChunk(b, s.m)
	if err != nil {
		return err
	}
	if !s.chunks[i] {
		if err := s.stage.Add(recs); err != nil {
			// The sums matched the signed manifest, so the centre sent
			// this; asking again would fetch the same. Drop it.
			*snap = nil
			if aerr := s.stage.Abort(); aerr != nil {
				l.log.Warn("drop staged snapshot", "err", aerr)
			}
			return fmt.Errorf("snapshot %d chunk %d: %w", s.m.Version, i, err)
		}
		s.chunks[i] = true
		s.have++
		s.started = l.o.Now() // the timeout is for chunks that stop coming
	}
	return l.maybeApply(snap)
}

func (l *Link) maybeApply(snap **snapshot) error {
	s := *snap
	if s.have < len(s.chunks) {
		return nil
	}
	*snap = nil
	start := l.o.Now()
	tl, err := s.stage.Commit()
	// Staging the chunks mapped pages of the store file in; give them back
	// to a small gate box.
	if r, ok := l.store.(interface{ ReleasePages() error }); ok {
		if err := r.ReleasePages(); err != nil {
			l.log.Warn("release store pages", "err", err)
		}
	}
	if errors.Is(err, cache.ErrStale) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("apply snapshot %d: %w", s.m.Version, err)
	}
	l.count(func(st *Stats) { st.Snapshots++ })
	l.log.Info("snapshot applied", "version", s.m.Version, "tickets", s.m.Tickets, "revocations", s.m.Revocations,
		"took", l.o.Now().Sub(start).Round(time.Millisecond))
	if tl != nil && l.o.OnTrust != nil {
		l.o.OnTrust(tl)
	}
	return nil
}
