// Package wire is the MQTT wire format between gates (gated) and the centre
// (gatesync): topic names, the messages on them, and their parsers.
//
// Uplink messages (gate to centre) are plain JSON: the broker's credentials
// and ACL say which gate may publish on a topic, and the centre checks that
// a message names the gate of its topic. Downlink messages (centre to
// gates) are signed envelopes (verify.Envelope) under the centre's root
// key, which every gate pins; a gate ignores, and logs, any downlink
// message whose signature, type, venue or gate does not check out. Snapshot
// chunks are the one unsigned downlink message: each is bound by its
// SHA-256 to a signed manifest.
//
// Every parser here sees outside input: it refuses what it does not
// understand with an error and never panics (see the Fuzz targets).
package wire

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/gated-dev/gated/verify"
)

// Version is the wire format version carried in every uplink message as "v".
const Version = 1

// Prefix is the root of every topic.
const Prefix = "gated/v1/"

// Per-gate topic kinds: gated/v1/{venue}/{gate}/{kind}.
const (
	KindEntries = "entries" // gate -> centre: Batch
	KindStatus  = "status"  // gate -> centre: Status, retained; the will marks the gate offline
	KindHello   = "hello"   // gate -> centre: Hello, asks for a catch-up or a resync
	KindAck     = "ack"     // centre -> gate: signed Ack
	KindSync    = "sync"    // centre -> gate: signed Delta or Manifest envelopes, and snapshot chunks
)

// Venue-wide topic kinds: gated/v1/{venue}/{kind}.
const (
	KindWhitelist = "whitelist" // centre -> gates: signed Delta
	KindLive      = "live"      // centre -> gates: signed Live
)

// Signed document types of downlink messages.
const (
	TypeAck      = "gated.sync.ack.v1"
	TypeDelta    = "gated.sync.delta.v1"
	TypeManifest = "gated.sync.manifest.v1"
	TypeLive     = "gated.sync.live.v1"
	TypeUses     = "gated.sync.uses.v1"
)

// Limits a parser enforces before doing any work.
const (
	MaxMessage    = 4 << 20 // bytes of any message
	MaxBatch      = 5000    // entries in one Batch
	MaxDeltaItems = 5000    // tickets plus revocations in one Delta
	MaxChunks     = 100000  // chunks of one snapshot
	MaxLiveUses   = 5000
	MaxPageUses   = 5000 // uses in one Uses message
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidID reports whether s may be a venue or gate id: 1-64 letters,
// digits, '.', '_' or '-', starting with a letter or digit. Ids are topic
// levels, so they must never hold '/', '+' or '#'.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// GateTopic is gated/v1/{venue}/{gate}/{kind}.
func GateTopic(venue, gate, kind string) string {
	return Prefix + venue + "/" + gate + "/" + kind
}

// VenueTopic is gated/v1/{venue}/{kind}.
func VenueTopic(venue, kind string) string { return Prefix + venue + "/" + kind }

// Topic is a parsed topic name. Gate is empty for venue-wide topics.
type Topic struct {
	Venue, Gate, Kind string
}

// ErrTopic means a topic name is not one of ours.
var ErrTopic = errors.New("not a gated topic")

// ParseTopic splits a topic name.
func ParseTopic(s string) (Topic, error) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return Topic{}, ErrTopic
	}
	p := strings.Split(rest, "/")
	switch {
	case len(p) == 2 && ValidID(p[0]) && (p[1] == KindWhitelist || p[1] == KindLive):
		return Topic{Venue: p[0], Kind: p[1]}, nil
	case len(p) == 3 && ValidID(p[0]) && ValidID(p[1]):
		switch p[2] {
		case KindEntries, KindStatus, KindHello, KindAck, KindSync:
			return Topic{Venue: p[0], Gate: p[1], Kind: p[2]}, nil
		}
	}
	return Topic{}, fmt.Errorf("%w: %q", ErrTopic, s)
}

// Batch is a run of journal records from one gate's outbox (gate ->
// centre). First and Last bound the sequence numbers it carries; a Batch
// with no entries is a ping that asks for an Ack carrying the centre's time.
type Batch struct {
	V        int    `json:"v"`
	Gate     string `json:"gate"`
	Instance string `json:"instance"` // the gate store's id: seqs restart with a new store
	First    uint64 `json:"first"`
	Last     uint64 `json:"last"`
	// SentAt is the gate's clock when sent; the Ack echoes it so the gate
	// can estimate its clock offset from the centre.
	SentAt time.Time `json:"sent_at"`
	// ClockOffsetMs is the gate's latest estimate of centre clock minus
	// gate clock, recorded at the centre with every entry of the batch.
	ClockOffsetMs int64             `json:"clock_offset_ms"`
	Entries       []json.RawMessage `json:"entries"`
}

// Entry is the part of a journal record (cache.Decision) the centre reads;
// the whole record is kept as sent.
type Entry struct {
	Seq     uint64        `json:"seq"`
	ID      string        `json:"id"`
	At      time.Time     `json:"at"`
	Gate    string        `json:"gate"`
	Event   string        `json:"event"`
	Verdict string        `json:"verdict"`
	Reason  verify.Reason `json:"reason"`
	Ticket  string        `json:"ticket"`
	// Code is what the gate scanned, for an admission: the centre checks
	// its signatures before it books the admission as a use.
	Code string `json:"code,omitempty"`
}

// ParsedBatch is a Batch whose entries have been decoded and checked.
type ParsedBatch struct {
	Batch
	Parsed []Entry
}

func limit(b []byte) error {
	if len(b) > MaxMessage {
		return fmt.Errorf("message of %d bytes; at most %d", len(b), MaxMessage)
	}
	return nil
}

// ParseBatch decodes and checks a Batch published on gate's entries topic:
// it must name that gate, and its entries must be in order, within
// [First, Last], with ids of the form instance-seq. An entry may name
// another gate: a store renamed with --gate keeps its older entries, and
// refusing them would stall that gate's uplink for good; the centre books
// every entry under the topic's gate and keeps the record as sent.
func ParseBatch(b []byte, gate string) (*ParsedBatch, error) {
	if err := limit(b); err != nil {
		return nil, err
	}
	var p ParsedBatch
	if err := json.Unmarshal(b, &p.Batch); err != nil {
		return nil, fmt.Errorf("batch: %w", err)
	}
	switch {
	case p.V != Version:
		return nil, fmt.Errorf("batch: wire version %d, want %d", p.V, Version)
	case p.Gate != gate:
		return nil, fmt.Errorf("batch names gate %q on gate %q's topic", p.Gate, gate)
	case !ValidID(p.Instance):
		return nil, fmt.Errorf("batch: bad instance %q", p.Instance)
	case len(p.Entries) > MaxBatch:
		return nil, fmt.Errorf("batch of %d entries; at most %d", len(p.Entries), MaxBatch)
	case len(p.Entries) == 0 && (p.First != 0 || p.Last != 0):
		return nil, errors.New("empty batch with a sequence range")
	case len(p.Entries) > 0 && (p.First == 0 || p.Last < p.First || p.Last-p.First >= 1<<32):
		return nil, fmt.Errorf("batch: bad range %d-%d", p.First, p.Last)
	}
	prev := uint64(0)
	for i, raw := range p.Entries {
		var e Entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("batch entry %d: %w", i, err)
		}
		switch {
		case e.Seq < p.First || e.Seq > p.Last || e.Seq <= prev:
			return nil, fmt.Errorf("batch entry %d: seq %d out of order or outside %d-%d", i, e.Seq, p.First, p.Last)
		case e.ID != fmt.Sprintf("%s-%d", p.Instance, e.Seq):
			return nil, fmt.Errorf("batch entry %d: id %q is not %s-%d", i, e.ID, p.Instance, e.Seq)
		case e.Verdict != "admit" && e.Verdict != "deny":
			return nil, fmt.Errorf("batch entry %d: verdict %q", i, e.Verdict)
		}
		if e.Verdict == "admit" {
			if _, err := verify.ParseTicketID(e.Ticket); err != nil {
				return nil, fmt.Errorf("batch entry %d: admit without a ticket id", i)
			}
		}
		prev = e.Seq
		p.Parsed = append(p.Parsed, e)
	}
	return &p, nil
}

// Status is a gate's retained heartbeat (gate -> centre). The will message
// is a Status with Online false.
type Status struct {
	V                int       `json:"v"`
	Gate             string    `json:"gate"`
	Online           bool      `json:"online"`
	Instance         string    `json:"instance,omitempty"`
	Event            string    `json:"event,omitempty"`
	At               time.Time `json:"at,omitzero"`
	Outbox           int       `json:"outbox"`
	LastSeq          uint64    `json:"last_seq,omitempty"`
	WhitelistVersion uint64    `json:"whitelist_version,omitempty"`
	ClockOffsetMs    int64     `json:"clock_offset_ms"`
	// Uses is the gate's uses cursor (nil: a gate before the uses log):
	// a gate behind the log's head gets a catch-up unasked, so a fan-out
	// the broker lost in a quiet spell is made up within a heartbeat or so.
	Uses *uint64 `json:"uses,omitempty"`
}

// ParseStatus decodes a Status from gate's status topic.
func ParseStatus(b []byte, gate string) (*Status, error) {
	if err := limit(b); err != nil {
		return nil, err
	}
	var s Status
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	if s.V != Version || s.Gate != gate || s.Outbox < 0 {
		return nil, fmt.Errorf("status: version %d, gate %q, outbox %d", s.V, s.Gate, s.Outbox)
	}
	return &s, nil
}

// Hello asks the centre for what a gate lacks (gate -> centre): the
// deltas after Version, or a snapshot when those are not enough. Reason
// says why: "connect", "gap", "snapshot", "chunks".
type Hello struct {
	V        int    `json:"v"`
	Gate     string `json:"gate"`
	Instance string `json:"instance"`
	Event    string `json:"event"`
	Version  uint64 `json:"version"`
	Reason   string `json:"reason"`
	// Uses is the gate's uses cursor: it holds every use of the event's
	// uses log up to this number. Nil for gates that predate the log; the
	// centre then sends them no pages.
	Uses *uint64 `json:"uses,omitempty"`
}

// ParseHello decodes a Hello from gate's hello topic.
func ParseHello(b []byte, gate string) (*Hello, error) {
	if err := limit(b); err != nil {
		return nil, err
	}
	var h Hello
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("hello: %w", err)
	}
	if h.V != Version || h.Gate != gate || h.Event == "" {
		return nil, fmt.Errorf("hello: version %d, gate %q, event %q", h.V, h.Gate, h.Event)
	}
	return &h, nil
}

// Ack tells a gate that every entry of its batch First..Last is durably
// in the centre's books (centre -> gate, signed). StoredTo is the highest
// sequence number below which the centre holds every entry of this
// instance. A gate deletes exactly First..Last from its outbox.
type Ack struct {
	Venue      string    `json:"venue"`
	Gate       string    `json:"gate"`
	Instance   string    `json:"instance"`
	First      uint64    `json:"first"`
	Last       uint64    `json:"last"`
	StoredTo   uint64    `json:"stored_to"`
	New        int       `json:"new"`         // entries new to the centre
	Conflict   int       `json:"conflicts"`   // conflicts this batch raised
	SentAt     time.Time `json:"sent_at"`     // the batch's SentAt, echoed
	ReceivedAt time.Time `json:"received_at"` // the centre's clock when the batch arrived
	CentreAt   time.Time `json:"centre_at"`   // the centre's clock when it acked
}

// Delta is one numbered change to an event's whitelist (centre -> gates,
// signed). A gate at version v applies it when Prev <= v < Version,
// ignores it when v >= Version, and asks for a resync when v < Prev: it
// missed a change. Snapshot set means the change was too large for a
// delta: fetch a snapshot instead.
type Delta struct {
	Event       string               `json:"event"`
	Prev        uint64               `json:"prev"`
	Version     uint64               `json:"version"`
	CreatedAt   time.Time            `json:"created_at"`
	Tickets     []verify.TicketEntry `json:"tickets,omitempty"`
	Revocations []verify.Revocation  `json:"revocations,omitempty"`
	TrustList   *verify.Envelope     `json:"trust_list,omitempty"` // root-signed; a key rotation
	Snapshot    bool                 `json:"snapshot,omitempty"`
}

// Manifest announces a snapshot sent to one gate (centre -> gate, signed):
// the whole whitelist, revocations and trust list of an event at Version,
// in chunks whose SHA-256 sums it lists.
type Manifest struct {
	Venue       string           `json:"venue"`
	Gate        string           `json:"gate"`
	ID          uint64           `json:"id"` // names this snapshot's chunks
	Event       string           `json:"event"`
	Version     uint64           `json:"version"`
	CreatedAt   time.Time        `json:"created_at"`
	TrustList   *verify.Envelope `json:"trust_list"`
	Tickets     int              `json:"tickets"`
	Revocations int              `json:"revocations"`
	Chunks      []string         `json:"chunks"` // hex SHA-256 of each chunk message
}

// LiveUse is an admission at a gate, fanned out to the others.
type LiveUse struct {
	Ticket  verify.TicketID `json:"ticket"`
	Gate    string          `json:"gate"`
	At      time.Time       `json:"at"`
	Seq     uint64          `json:"seq"`
	EntryID string          `json:"entry_id"`
}

// Live carries first admissions the centre has just ingested (centre ->
// gates of a venue, signed), so an online gate refuses a second use.
type Live struct {
	Venue string    `json:"venue"`
	Event string    `json:"event"`
	Uses  []LiveUse `json:"uses"`
}

// LoggedUse is a first admission in the centre's numbered uses log of an
// event.
type LoggedUse struct {
	N       uint64          `json:"n"` // its number in the event's uses log
	Ticket  verify.TicketID `json:"ticket"`
	Gate    string          `json:"gate"`
	At      time.Time       `json:"at"`
	Seq     uint64          `json:"seq"`
	EntryID string          `json:"entry_id"`
}

// Uses is a run From..To of an event's uses log (centre -> gates, signed):
// the live fan-out to a venue (Gate empty), or a catch-up page for one
// gate. Uses holds every logged use numbered From..To, in order. Head is
// the log's last number when sent; More says the centre stopped a
// catch-up before Head, so the gate asks again once it applied this page.
// Restart (a catch-up page only) says the gate's cursor is beyond the
// log (the centre's books were restored from an older copy): the gate
// takes To as its cursor and catches up from there.
type Uses struct {
	Venue   string      `json:"venue"`
	Gate    string      `json:"gate,omitempty"`
	Event   string      `json:"event"`
	From    uint64      `json:"from"`
	To      uint64      `json:"to"`
	Head    uint64      `json:"head"`
	More    bool        `json:"more,omitempty"`
	Restart bool        `json:"restart,omitempty"`
	Uses    []LoggedUse `json:"uses"`
}

// Sign seals a downlink document with the centre's root key.
func Sign(typ string, v any, key ed25519.PrivateKey) ([]byte, error) {
	env, err := verify.Seal(typ, v, key)
	if err != nil {
		return nil, err
	}
	return json.Marshal(env)
}

// ErrSignature wraps verify.ErrEnvelope for messages that fail verification.
var ErrSignature = verify.ErrEnvelope

// Open reads a signed downlink message, checks it is of type typ and
// signed by root, and decodes it into v.
func Open(b []byte, typ string, root ed25519.PublicKey, v any) error {
	if err := limit(b); err != nil {
		return err
	}
	var env verify.Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return fmt.Errorf("envelope: %w", err)
	}
	return env.Open(typ, root, v)
}

// PeekType returns the claimed type of a signed message, unverified, so a
// receiver can pick what to Open it as.
func PeekType(b []byte) string {
	var env struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(b, &env) != nil {
		return ""
	}
	return env.Type
}

// OpenAck opens an Ack and checks it is addressed to this gate.
func OpenAck(b []byte, root ed25519.PublicKey, venue, gate string) (*Ack, error) {
	var a Ack
	if err := Open(b, TypeAck, root, &a); err != nil {
		return nil, err
	}
	if a.Venue != venue || a.Gate != gate {
		return nil, fmt.Errorf("ack for %s/%s reached %s/%s", a.Venue, a.Gate, venue, gate)
	}
	if a.Last < a.First || (a.First == 0) != (a.Last == 0) {
		return nil, fmt.Errorf("ack: bad range %d-%d", a.First, a.Last)
	}
	return &a, nil
}

// OpenDelta opens a Delta.
func OpenDelta(b []byte, root ed25519.PublicKey) (*Delta, error) {
	var d Delta
	if err := Open(b, TypeDelta, root, &d); err != nil {
		return nil, err
	}
	if d.Event == "" || d.Version == 0 || d.Prev >= d.Version {
		return nil, fmt.Errorf("delta: event %q, versions %d-%d", d.Event, d.Prev, d.Version)
	}
	if len(d.Tickets)+len(d.Revocations) > MaxDeltaItems {
		return nil, fmt.Errorf("delta of %d items; at most %d", len(d.Tickets)+len(d.Revocations), MaxDeltaItems)
	}
	return &d, nil
}

// OpenManifest opens a Manifest and checks it is addressed to this gate.
func OpenManifest(b []byte, root ed25519.PublicKey, venue, gate string) (*Manifest, error) {
	var m Manifest
	if err := Open(b, TypeManifest, root, &m); err != nil {
		return nil, err
	}
	if m.Venue != venue || m.Gate != gate {
		return nil, fmt.Errorf("manifest for %s/%s reached %s/%s", m.Venue, m.Gate, venue, gate)
	}
	if m.Event == "" || m.Version == 0 || len(m.Chunks) > MaxChunks || m.TrustList == nil {
		return nil, fmt.Errorf("manifest: event %q, version %d, %d chunks", m.Event, m.Version, len(m.Chunks))
	}
	for _, c := range m.Chunks {
		if h, err := hex.DecodeString(c); err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("manifest: bad chunk sum %q", c)
		}
	}
	return &m, nil
}

// OpenLive opens a Live and checks it is for this venue.
func OpenLive(b []byte, root ed25519.PublicKey, venue string) (*Live, error) {
	var l Live
	if err := Open(b, TypeLive, root, &l); err != nil {
		return nil, err
	}
	if l.Venue != venue || len(l.Uses) > MaxLiveUses {
		return nil, fmt.Errorf("live for venue %q with %d uses reached %q", l.Venue, len(l.Uses), venue)
	}
	return &l, nil
}

// OpenUses opens a Uses message and checks it is for this venue and, when
// addressed to a gate, for this gate, and that its uses are exactly
// From..To: a gate advances its cursor to To on the strength of it.
func OpenUses(b []byte, root ed25519.PublicKey, venue, gate string) (*Uses, error) {
	var u Uses
	if err := Open(b, TypeUses, root, &u); err != nil {
		return nil, err
	}
	if u.Venue != venue || (u.Gate != "" && u.Gate != gate) {
		return nil, fmt.Errorf("uses for %s/%s reached %s/%s", u.Venue, u.Gate, venue, gate)
	}
	switch {
	case u.Event == "" || len(u.Uses) > MaxPageUses:
		return nil, fmt.Errorf("uses: event %q, %d uses", u.Event, len(u.Uses))
	case len(u.Uses) == 0 && u.From != u.To+1:
		return nil, fmt.Errorf("uses: empty page %d-%d", u.From, u.To)
	case len(u.Uses) > 0 && (u.From == 0 || u.To < u.From || u.To-u.From+1 != uint64(len(u.Uses))):
		return nil, fmt.Errorf("uses: %d uses numbered %d-%d", len(u.Uses), u.From, u.To)
	case u.Head < u.To:
		return nil, fmt.Errorf("uses: page %d-%d beyond head %d", u.From, u.To, u.Head)
	case u.Restart && (u.Gate == "" || u.From != 1):
		return nil, fmt.Errorf("uses: restart in a page from %d for gate %q", u.From, u.Gate)
	}
	for i, x := range u.Uses {
		if x.N != u.From+uint64(i) {
			return nil, fmt.Errorf("uses: use %d numbered %d in page %d-%d", i, x.N, u.From, u.To)
		}
	}
	return &u, nil
}

// Snapshot chunks: "GSC1", the manifest's ID (8 bytes big-endian), the
// chunk's index (4 bytes), then opaque records (cache.SnapshotRecords).
var chunkMagic = []byte("GSC1")

const chunkHeader = 16

// IsChunk reports whether a sync-topic message is a snapshot chunk rather
// than a signed envelope.
func IsChunk(b []byte) bool { return bytes.HasPrefix(b, chunkMagic) }

// Chunk builds a chunk message.
func Chunk(id uint64, index uint32, records []byte) []byte {
	b := make([]byte, 0, chunkHeader+len(records))
	b = append(b, chunkMagic...)
	b = binary.BigEndian.AppendUint64(b, id)
	b = binary.BigEndian.AppendUint32(b, index)
	return append(b, records...)
}

// ChunkSum is the sum a manifest lists for a chunk message.
func ChunkSum(msg []byte) string {
	h := sha256.Sum256(msg)
	return hex.EncodeToString(h[:])
}

// ParseChunk checks a chunk message against its manifest and returns its
// index and records.
func ParseChunk(b []byte, m *Manifest) (int, []byte, error) {
	if len(b) < chunkHeader || !IsChunk(b) {
		return 0, nil, errors.New("not a snapshot chunk")
	}
	if id := binary.BigEndian.Uint64(b[4:]); id != m.ID {
		return 0, nil, fmt.Errorf("chunk of snapshot %d, expecting %d", id, m.ID)
	}
	i := int(binary.BigEndian.Uint32(b[12:]))
	if i >= len(m.Chunks) {
		return 0, nil, fmt.Errorf("chunk %d of %d", i, len(m.Chunks))
	}
	if ChunkSum(b) != m.Chunks[i] {
		return 0, nil, fmt.Errorf("chunk %d: sum does not match the manifest", i)
	}
	return i, b[chunkHeader:], nil
}
