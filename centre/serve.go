package centre

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/gated-dev/gated/wire"
)

// Bus is what the sync server needs of an MQTT connection: the embedded
// broker's inline client or a client of an external broker. Subscribe's
// fn is called from the bus's own goroutines; it may block, which slows
// the publisher down.
type Bus interface {
	Publish(topic string, payload []byte, retain bool) error
	Subscribe(filters []string, fn func(topic string, payload []byte)) error
}

// ServerOptions tune the sync server; the zero value is the default.
type ServerOptions struct {
	// Logger gets sync events (default: discard).
	Logger *slog.Logger
	// MaxReplay is how many deltas a catch-up replays before it sends a
	// snapshot instead (default 500).
	MaxReplay int
	// ChunkBytes is the snapshot chunk size (default SnapshotChunkBytes).
	ChunkBytes int
	// CatchupEvery bounds how often a gate whose heartbeat shows an old
	// whitelist gets a catch-up unasked (default 30s).
	CatchupEvery time.Duration
	// ShareGroup, when set, subscribes to gate entries through the MQTT
	// shared subscription $share/GROUP/..., so the broker hands each batch
	// to one instance of the group: several gatesync sharing one
	// IngestStore (docs/scaleout.md).
	ShareGroup string
	// IngestOnly serves gate entries only: no status, hello, catch-ups or
	// delta publishing, which need the primary's centre directory.
	IngestOnly bool
	// KnownGate, when set, is the list of gate logins (the embedded
	// broker's: Centre.GateLogin): a message from any other gate, such as
	// the retained status of a removed gate, is refused and creates no
	// gate record.
	KnownGate func(venue, gate string) bool
	// UsesPage is how many uses one catch-up page carries (default 1000,
	// at most wire.MaxPageUses).
	UsesPage int
	// UsesPages is how many pages one catch-up sends before it stops and
	// lets the gate ask for more (default 16): a gate far behind is caught
	// up in rounds, so neither side holds the whole log in memory.
	UsesPages int
}

// Server is gatesync's sync side: it ingests gate entries, acks them,
// fans admissions out, tracks gates, publishes whitelist deltas and
// answers resync requests. Every downlink message is signed by the root.
type Server struct {
	c     *Centre
	bus   Bus
	o     ServerOptions
	log   *slog.Logger
	inbox chan message
	kick  chan struct{}
	catch chan catchup

	mu   sync.Mutex
	last map[string]time.Time // venue/gate -> last catch-up
}

type message struct {
	topic   string
	payload []byte
}

type catchup struct {
	venue, gate, event string
	have               uint64
	uses               *uint64 // the gate's uses cursor; nil: a gate that predates the uses log
}

// NewServer returns a server for c on bus.
func NewServer(c *Centre, bus Bus, o ServerOptions) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxReplay <= 0 {
		o.MaxReplay = 500
	}
	if o.CatchupEvery <= 0 {
		o.CatchupEvery = 30 * time.Second
	}
	if o.UsesPage <= 0 {
		o.UsesPage = 1000
	}
	o.UsesPage = min(o.UsesPage, wire.MaxPageUses)
	if o.UsesPages <= 0 {
		o.UsesPages = 16
	}
	return &Server{c: c, bus: bus, o: o, log: o.Logger, inbox: make(chan message, 256),
		kick: make(chan struct{}, 1), catch: make(chan catchup, 64), last: map[string]time.Time{}}
}

// Kick asks the publisher to look for new deltas. It never blocks.
func (s *Server) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	s.c.OnChange(s.Kick)
	defer s.c.OnChange(func() {})
	filters := []string{wire.Prefix + "+/+/" + wire.KindEntries}
	if s.o.ShareGroup != "" {
		filters[0] = "$share/" + s.o.ShareGroup + "/" + filters[0]
	}
	if !s.o.IngestOnly {
		filters = append(filters, wire.Prefix+"+/+/"+wire.KindStatus, wire.Prefix+"+/+/"+wire.KindHello)
	}
	err := s.bus.Subscribe(filters, func(topic string, payload []byte) {
		select {
		case s.inbox <- message{topic, payload}:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	if !s.o.IngestOnly {
		if n, err := s.c.ShareReentry(); err != nil {
			s.log.Error("share re-entry tickets with the other instances", "err", err)
		} else if n > 0 {
			s.log.Info("re-entry tickets shared with the other instances", "tickets", n)
		}
		if err := s.c.ShareTrust(); err != nil {
			s.log.Error("share the trust list with the other instances", "err", err)
		}
		wg.Go(func() { s.publisher(ctx) })
		wg.Go(func() { s.catchups(ctx) })
	}
	// Codes are checked a batch ahead (prepare), on every core, while the
	// last batch is being stored: the signature checks cost about what
	// the storing does, and overlap it instead of adding to it.
	ready := make(chan staged, 2)
	wg.Go(func() { s.prepare(ctx, ready) })
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case st := <-ready:
			if err := s.handleStaged(st); err != nil {
				s.log.Warn("refused uplink message", "topic", st.m.topic, "bytes", len(st.m.payload), "err", err)
			}
		}
	}
}

// staged is an uplink message, parsed and proven when it is a batch.
type staged struct {
	m     message
	topic wire.Topic
	batch *wire.ParsedBatch
	proof *Proof
	err   error
	at    time.Time // when it arrived: an ack's received_at
}

// prepare parses the batches of the inbox and checks their codes, in
// arrival order, handing every message on to ready.
func (s *Server) prepare(ctx context.Context, ready chan<- staged) {
	for {
		var st staged
		select {
		case <-ctx.Done():
			return
		case st.m = <-s.inbox:
		}
		st.at = s.c.now().UTC()
		if st.topic, st.err = wire.ParseTopic(st.m.topic); st.err == nil && st.topic.Kind == wire.KindEntries {
			if st.batch, st.err = wire.ParseBatch(st.m.payload, st.topic.Gate); st.err == nil {
				if st.proof, st.err = s.c.Prove(st.batch); st.err != nil {
					// No ack: the gate sends the batch again.
					s.log.Error("check admission codes", "venue", st.topic.Venue, "gate", st.topic.Gate, "err", st.err)
					continue
				}
			}
		}
		select {
		case ready <- st:
		case <-ctx.Done():
			return
		}
	}
}

func (s *Server) handleStaged(st staged) error {
	if st.err != nil {
		return st.err
	}
	if st.batch != nil {
		return s.ingest(st.topic.Venue, st.batch, st.proof, st.at)
	}
	return s.handle(st.m)
}

func (s *Server) sign(typ string, v any) ([]byte, error) { return wire.Sign(typ, v, s.c.root) }

func (s *Server) handle(m message) error {
	t, err := wire.ParseTopic(m.topic)
	if err != nil {
		return err
	}
	if s.o.KnownGate != nil && !s.o.KnownGate(t.Venue, t.Gate) {
		return errors.New("no such gate login (removed or locked?)")
	}
	switch t.Kind {
	case wire.KindEntries:
		b, err := wire.ParseBatch(m.payload, t.Gate)
		if err != nil {
			return err
		}
		return s.ingest(t.Venue, b, nil, s.c.now().UTC())
	case wire.KindStatus:
		st, err := wire.ParseStatus(m.payload, t.Gate)
		if err != nil {
			return err
		}
		if err := s.c.GateStatus(t.Venue, st); err != nil {
			s.log.Error("store gate status", "err", err)
			return nil
		}
		if st.Online && st.Event != "" {
			behind := false
			if v, err := s.c.EventVersion(st.Event); err == nil && v > st.WhitelistVersion {
				behind = true
			}
			if st.Uses != nil {
				if _, head, err := s.c.Uses(st.Event, *st.Uses, 0); err == nil && head > *st.Uses {
					behind = true
				}
			}
			if behind && s.due("status", t.Venue, t.Gate, s.o.CatchupEvery) {
				s.queueCatchup(catchup{venue: t.Venue, gate: t.Gate, event: st.Event, have: st.WhitelistVersion, uses: st.Uses})
			}
		}
		return nil
	case wire.KindHello:
		h, err := wire.ParseHello(m.payload, t.Gate)
		if err != nil {
			return err
		}
		if err := s.c.NoteGate(t.Venue, t.Gate, h.Event); err != nil {
			s.log.Error("store gate", "err", err)
		}
		if s.due("hello", t.Venue, t.Gate, 500*time.Millisecond) {
			s.queueCatchup(catchup{venue: t.Venue, gate: t.Gate, event: h.Event, have: h.Version, uses: h.Uses})
		}
		return nil
	}
	return errors.New("gates do not publish " + t.Kind + " messages")
}

// due rate-limits catch-ups per gate and cause: an answered hello must not
// silence the next one for the heartbeat's long interval.
func (s *Server) due(cause, venue, gate string, every time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := cause + ":" + venue + "/" + gate
	now := s.c.now()
	if now.Sub(s.last[k]) < every {
		return false
	}
	s.last[k] = now
	return true
}

func (s *Server) queueCatchup(c catchup) {
	select {
	case s.catch <- c:
	default:
		s.log.Warn("catch-up queue full: the gate will ask again", "venue", c.venue, "gate", c.gate)
	}
}

// ingest stores a batch proven by p (nil: prove it now), received at
// received, and acks it.
func (s *Server) ingest(venue string, b *wire.ParsedBatch, p *Proof, received time.Time) error {
	var res *IngestResult
	var err error
	if p == nil {
		res, err = s.c.Ingest(venue, b)
	} else {
		res, err = s.c.IngestProven(venue, b, p)
	}
	if err != nil {
		// No ack: the gate sends the batch again.
		s.log.Error("ingest failed", "venue", venue, "gate", b.Gate, "err", err)
		return nil
	}
	ack, err := s.sign(wire.TypeAck, &wire.Ack{Venue: venue, Gate: b.Gate, Instance: b.Instance, First: b.First, Last: b.Last,
		StoredTo: res.StoredTo, New: res.New, Conflict: len(res.Conflicts), SentAt: b.SentAt, ReceivedAt: received, CentreAt: s.c.now().UTC()})
	if err != nil {
		return err
	}
	if err := s.bus.Publish(wire.GateTopic(venue, b.Gate, wire.KindAck), ack, false); err != nil {
		s.log.Warn("ack not published: the gate will send again", "gate", b.Gate, "err", err)
	}
	if res.New > 0 {
		s.log.Debug("ingested", "venue", venue, "gate", b.Gate, "new", res.New, "duplicate", res.Duplicate, "stored_to", res.StoredTo)
	}
	for _, cf := range res.Conflicts {
		s.log.Warn("conflict: ticket admitted twice", "ticket", cf.Ticket, "kind", cf.Kind,
			"first_gate", cf.First.Gate, "second_gate", cf.Second.Gate)
	}
	for _, a := range res.Alerts {
		s.log.Warn("alert: gate claim not believed", "kind", a.Kind, "venue", a.Venue, "gate", a.Gate,
			"entry", a.EntryID, "ticket", a.Ticket, "detail", a.Detail)
	}
	s.fanOut(venue, res.Logged)
	return nil
}

// fanOut publishes newly logged uses to every venue with a gate of their
// event, numbered as in the log: a gate that sees a number it did not
// expect asks for the missing ones, so a lost message costs a catch-up,
// never a second admission.
func (s *Server) fanOut(venue string, logged []EventUse) {
	byEvent := map[string][]wire.LoggedUse{}
	var events []string
	for _, lu := range logged {
		if byEvent[lu.Event] == nil {
			events = append(events, lu.Event)
		}
		byEvent[lu.Event] = append(byEvent[lu.Event], lu.LoggedUse)
	}
	for _, ev := range events {
		uses := byEvent[ev]
		venues, err := s.c.Venues(ev)
		if err != nil {
			s.log.Error("read gates", "err", err)
		}
		if !slices.Contains(venues, venue) {
			venues = append(venues, venue)
		}
		for i := 0; i < len(uses); i += wire.MaxPageUses {
			page := uses[i:min(i+wire.MaxPageUses, len(uses))]
			last := page[len(page)-1].N
			for _, v := range venues {
				msg, err := s.sign(wire.TypeUses, &wire.Uses{Venue: v, Event: ev, From: page[0].N, To: last, Head: last, Uses: page})
				if err != nil {
					s.log.Error("sign uses", "err", err)
					return
				}
				if err := s.bus.Publish(wire.VenueTopic(v, wire.KindLive), msg, false); err != nil {
					s.log.Warn("live fan-out not published: gates catch up from the uses log", "venue", v, "err", err)
				}
			}
		}
	}
}

// publisher publishes logged deltas to every venue with a gate of their
// event, and keeps the cursor in the books so a restart resumes.
func (s *Server) publisher(ctx context.Context) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		s.publishDeltas()
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-tick.C:
		}
	}
}

func (s *Server) publishDeltas() {
	from, err := s.c.PublishedTo()
	if err != nil {
		s.log.Error("read publish cursor", "err", err)
		return
	}
	var ds []*wire.Delta
	if err := s.c.Deltas(from, "", func(d *wire.Delta) error { ds = append(ds, d); return nil }); err != nil {
		s.log.Error("read delta log", "err", err)
		return
	}
	to := from
	for _, d := range ds {
		venues, err := s.c.Venues(d.Event)
		if err != nil {
			s.log.Error("read gates", "err", err)
			return
		}
		msg, err := s.sign(wire.TypeDelta, d)
		if err != nil {
			s.log.Error("sign delta", "err", err)
			return
		}
		if err := s.c.ShareReentryDelta(d); err != nil {
			s.log.Error("share re-entry tickets: the delta waits", "version", d.Version, "err", err)
			s.SetPublished(to)
			return
		}
		for _, v := range venues {
			if err := s.bus.Publish(wire.VenueTopic(v, wire.KindWhitelist), msg, false); err != nil {
				s.log.Warn("delta not published yet", "version", d.Version, "err", err)
				s.SetPublished(to)
				return
			}
		}
		s.log.Info("delta published", "event", d.Event, "version", d.Version, "venues", len(venues),
			"tickets", len(d.Tickets), "revocations", len(d.Revocations), "trust_list", d.TrustList != nil, "snapshot", d.Snapshot)
		to = d.Version
	}
	s.SetPublished(to)
}

// SetPublished stores the publish cursor, logging a failure.
func (s *Server) SetPublished(v uint64) {
	if err := s.c.SetPublishedTo(v); err != nil {
		s.log.Error("store publish cursor", "err", err)
	}
}

// catchups sends gates what they lack, one gate at a time so a snapshot
// does not hold up ingest.
func (s *Server) catchups(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-s.catch:
			if err := s.catchup(c); err != nil {
				s.log.Error("catch-up failed", "venue", c.venue, "gate", c.gate, "err", err)
			}
		}
	}
}

func (s *Server) catchup(c catchup) error {
	if err := s.catchupDeltas(c); err != nil {
		return err
	}
	// After the whitelist, on the same topic: a gate that applied the last
	// page has every change and use as of its hello.
	return s.catchupUses(c)
}

// catchupUses sends a gate the uses logged after its cursor, in at most
// UsesPages pages; the last says More when the log goes on, and an empty
// page answers a gate that is up to date, so a starting gate knows.
func (s *Server) catchupUses(c catchup) error {
	if c.uses == nil {
		return nil
	}
	topic := wire.GateTopic(c.venue, c.gate, wire.KindSync)
	after, restart := *c.uses, false
	for p := 0; ; p++ {
		uses, head, err := s.c.Uses(c.event, after, s.o.UsesPage)
		if err != nil {
			return err
		}
		if after > head {
			// A cursor beyond the log: the books were restored from an
			// older copy. The gate starts again from the log's start.
			s.log.Warn("gate's uses cursor is beyond the uses log: sending the log from its start",
				"venue", c.venue, "gate", c.gate, "cursor", after, "head", head)
			after, restart, p = 0, true, -1
			continue
		}
		page := wire.Uses{Venue: c.venue, Gate: c.gate, Event: c.event, From: after + 1, To: after, Head: head, Uses: uses,
			Restart: restart && p == 0}
		if len(uses) > 0 {
			page.To = uses[len(uses)-1].N
		}
		last := p+1 == s.o.UsesPages || len(uses) < s.o.UsesPage || page.To >= head
		page.More = last && page.To < head
		msg, err := s.sign(wire.TypeUses, &page)
		if err != nil {
			return err
		}
		if err := s.bus.Publish(topic, msg, false); err != nil {
			return err
		}
		after = page.To
		if last {
			if after > *c.uses {
				s.log.Info("uses caught up", "venue", c.venue, "gate", c.gate, "from", *c.uses, "to", after, "head", head)
			}
			return nil
		}
	}
}

func (s *Server) catchupDeltas(c catchup) error {
	evVer, err := s.c.EventVersion(c.event)
	if err != nil || c.have >= evVer {
		return err
	}
	var ds []*wire.Delta
	snapshot := false
	err = s.c.Deltas(c.have, c.event, func(d *wire.Delta) error {
		if d.Snapshot || len(ds) >= s.o.MaxReplay || (len(ds) == 0 && d.Prev > c.have) {
			snapshot = true
			return errStop
		}
		ds = append(ds, d)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	topic := wire.GateTopic(c.venue, c.gate, wire.KindSync)
	if !snapshot {
		for _, d := range ds {
			msg, err := s.sign(wire.TypeDelta, d)
			if err != nil {
				return err
			}
			if err := s.bus.Publish(topic, msg, false); err != nil {
				return err
			}
		}
		s.log.Info("catch-up sent", "venue", c.venue, "gate", c.gate, "from", c.have, "deltas", len(ds))
		return nil
	}
	return s.sendSnapshot(c, topic)
}

var errStop = errors.New("stop")

func (s *Server) sendSnapshot(c catchup, topic string) error {
	start := time.Now()
	sn, err := s.c.Snapshot(c.event, s.o.ChunkBytes)
	if err != nil {
		return err
	}
	var idb [8]byte
	rand.Read(idb[:])
	m := wire.Manifest{Venue: c.venue, Gate: c.gate, ID: binary.BigEndian.Uint64(idb[:]), Event: c.event, Version: sn.Version,
		CreatedAt: s.c.now().UTC(), TrustList: sn.TrustList, Tickets: sn.Tickets, Revocations: sn.Revocations}
	msgs := make([][]byte, len(sn.Chunks))
	for i, ch := range sn.Chunks {
		msgs[i] = wire.Chunk(m.ID, uint32(i), ch)
		m.Chunks = append(m.Chunks, wire.ChunkSum(msgs[i]))
	}
	mb, err := s.sign(wire.TypeManifest, &m)
	if err != nil {
		return err
	}
	if err := s.bus.Publish(topic, mb, false); err != nil {
		return err
	}
	for _, msg := range msgs {
		if err := s.bus.Publish(topic, msg, false); err != nil {
			return err
		}
	}
	s.log.Info("snapshot sent", "venue", c.venue, "gate", c.gate, "version", sn.Version, "tickets", sn.Tickets,
		"revocations", sn.Revocations, "chunks", len(msgs), "took", time.Since(start).Round(time.Millisecond))
	return nil
}
