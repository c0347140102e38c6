package centre

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	bolt "go.etcd.io/bbolt"
)

// Ingest: the centre's books of gate entries. A batch is stored in one
// transaction, deduplicated by (gate, instance, sequence) and by entry id,
// and only then acked, so a batch that is sent again after a lost ack, a
// reconnect or a restart of either side is harmless.

var (
	bStreams   = []byte("streams")   // gate \x00 instance -> stored-to seq (8)
	bSeqs      = []byte("seqs")      // gate \x00 instance \x00 seq(8) -> record number (8)
	bEntries   = []byte("entries")   // record number (8) -> Record JSON
	bEntryIDs  = []byte("entry_ids") // entry id -> record number (8)
	bUses      = []byte("uses")      // ticket id -> first admission (Admission JSON)
	bConflicts = []byte("conflicts") // number (8) -> Conflict JSON
	bGates     = []byte("gates")     // venue/gate -> GateState JSON
	bUsers     = []byte("mqtt_users")
	bUseLog    = []byte("use_log")   // event \x00 n(8) -> wire.LoggedUse JSON: the numbered uses log
	bUseHeads  = []byte("use_heads") // event -> last number of its uses log (8)
	bAlerts    = []byte("alerts")    // number (8) -> Alert JSON

	syncBuckets = [][]byte{bStreams, bSeqs, bEntries, bEntryIDs, bUses, bConflicts, bGates, bUsers, bUseLog, bUseHeads, bAlerts}
)

// Record is one gate entry in the centre's books.
type Record struct {
	N             uint64          `json:"n"` // the centre's own order of arrival; the entries API pages by it
	Venue         string          `json:"venue"`
	Gate          string          `json:"gate"`
	ID            string          `json:"id"`
	ReceivedAt    time.Time       `json:"received_at"`
	ClockOffsetMs int64           `json:"clock_offset_ms"` // the gate's estimate of centre minus gate clock when sent
	Entry         json.RawMessage `json:"entry"`           // the journal record as the gate wrote it
}

// Admission is a ticket's admission as the centre saw it.
type Admission struct {
	Venue   string    `json:"venue"`
	Gate    string    `json:"gate"`
	EntryID string    `json:"entry_id"`
	At      time.Time `json:"at"`
}

// Conflict is a ticket admitted twice without a re-entry right: at two
// gates (typically both offline) or twice at one.
type Conflict struct {
	N          uint64          `json:"n"`
	Ticket     verify.TicketID `json:"ticket"`
	Kind       string          `json:"kind"` // "two_gates" or "twice"
	First      Admission       `json:"first"`
	Second     Admission       `json:"second"`
	DetectedAt time.Time       `json:"detected_at"`
}

// IngestResult is what a batch did to the books.
type IngestResult struct {
	New, Duplicate int
	StoredTo       uint64      // every seq of this gate instance up to here is stored
	Admitted       []Admission // new first admissions, for the live fan-out
	Tickets        []verify.TicketID
	Seqs           []uint64
	Conflicts      []Conflict
	// Logged are the new first admissions as numbered in their event's
	// uses log, in order (Admitted[i] is Logged[i]).
	Logged []EventUse
	// Alerts are the alerts the batch raised (claims that did not verify).
	Alerts []Alert
	// PrevInstance is the gate's store instance before this batch.
	PrevInstance string
}

// EventUse is a use in an event's uses log.
type EventUse struct {
	Event string
	wire.LoggedUse
}

// Alert is something a gate sent that the centre does not believe, or a
// sign that a gate or its login is misused. Alerts never change what
// gates decide; an operator reads them (GET /api/v1/alerts, the
// dashboard) and may lock the gate's login out.
type Alert struct {
	N       uint64    `json:"n"`
	Venue   string    `json:"venue"`
	Gate    string    `json:"gate"`
	Kind    string    `json:"kind"` // AlertUnproven, AlertOtherEvent, AlertRate, AlertNewInstance
	Ticket  string    `json:"ticket,omitempty"`
	EntryID string    `json:"entry_id,omitempty"`
	Detail  string    `json:"detail"`
	At      time.Time `json:"at"` // when the centre raised it
}

// Alert kinds.
const (
	// AlertUnproven: an admission whose scanned code does not verify
	// (missing, forged, another ticket's); never booked as a use.
	AlertUnproven = "unproven"
	// AlertOtherEvent: an admission of a ticket of another event than the
	// gate's; never booked as a use.
	AlertOtherEvent = "other_event"
	// AlertRate: a gate admitted far more a second than a lane can pass.
	AlertRate = "rate"
	// AlertNewInstance: a gate's entries come from a new store instance.
	AlertNewInstance = "new_instance"
)

func streamKey(gate, instance string) []byte { return []byte(gate + "\x00" + instance) }

// books is the centre's IngestStore: the one set with SetIngestStore, or
// the bbolt store in central.db.
func (c *Centre) books() IngestStore {
	if s := c.ingest.Load(); s != nil {
		return *s
	}
	return &BoltIngest{db: c.db}
}

// SetIngestStore makes s the centre's books of entries, gate states and
// conflicts instead of central.db (gatesync serve --store). Set it before
// serving; the caller closes s after the centre.
func (c *Centre) SetIngestStore(s IngestStore) { c.ingest.Store(&s) }

// Ingest stores a parsed batch from venue's gate in one transaction. An
// admission whose scanned code does not verify is booked as an entry and
// an alert, never as a use.
func (c *Centre) Ingest(venue string, b *wire.ParsedBatch) (*IngestResult, error) {
	p, err := c.Prove(b)
	if err != nil {
		return nil, err
	}
	return c.IngestProven(venue, b, p)
}

// Proof is what the centre found checking the codes of a batch's
// admissions (Prove), for IngestProven.
type Proof struct {
	unproven map[uint64]Alert
}

// Prove checks the codes of b's admissions. It needs no lock on the
// books, so the sync server proves the next batch while it stores one.
func (c *Centre) Prove(b *wire.ParsedBatch) (*Proof, error) {
	unproven, err := c.checkProofs(b)
	if err != nil {
		c.noteIngest(err) // the books' trust list could not be read: ingest is failing
		return nil, err
	}
	return &Proof{unproven: unproven}, nil
}

// IngestProven is Ingest of a batch Prove checked.
func (c *Centre) IngestProven(venue string, b *wire.ParsedBatch, p *Proof) (*IngestResult, error) {
	reentry, err := c.reentryTickets(b)
	if err != nil {
		c.noteIngest(err)
		return nil, err
	}
	unproven := p.unproven
	at := c.now().UTC()
	res, err := c.books().Ingest(IngestBatch{Venue: venue, Batch: b, At: at,
		Reentry: func(id verify.TicketID) bool { return reentry[id] }, Unproven: unproven})
	c.noteIngest(err)
	if err != nil {
		return nil, err
	}
	if extra := c.sanity(venue, b, res, at); len(extra) > 0 {
		// Booked after the batch: losing one to a crash loses a warning,
		// never an entry.
		if err := c.books().AddAlerts(extra); err != nil {
			return res, fmt.Errorf("book alerts: %w", err)
		}
		res.Alerts = append(res.Alerts, extra...)
	}
	return res, nil
}

// Alerts returns up to limit alerts with N above since, by N.
func (c *Centre) Alerts(since uint64, limit int) ([]Alert, error) {
	return c.books().Alerts(since, limit)
}

// Uses returns up to limit uses of event's uses log numbered above after,
// and the log's head.
func (c *Centre) Uses(event string, after uint64, limit int) ([]wire.LoggedUse, uint64, error) {
	return c.books().Uses(event, after, limit)
}

// reentryTickets looks up, before the store's transaction, which tickets
// admitted in b allow re-entry.
func (c *Centre) reentryTickets(b *wire.ParsedBatch) (map[verify.TicketID]bool, error) {
	out := map[verify.TicketID]bool{}
	err := c.db.View(func(tx *bolt.Tx) error {
		for _, e := range b.Parsed {
			if e.Verdict != cache.Admit {
				continue
			}
			tid, err := verify.ParseTicketID(e.Ticket)
			if err != nil {
				continue
			}
			if t, err := getTicket(tx, tid); err == nil && t.Flags&verify.FlagReentry != 0 {
				out[tid] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if rb, ok := c.books().(ReentryBook); ok {
		// An instance beside the primary may not know the ticket.
		var ask []verify.TicketID
		for _, e := range b.Parsed {
			if tid, err := verify.ParseTicketID(e.Ticket); err == nil && e.Verdict == cache.Admit && !out[tid] {
				ask = append(ask, tid)
			}
		}
		if len(ask) > 0 {
			shared, err := rb.Reentry(ask)
			if err != nil {
				return nil, err
			}
			for id, ok := range shared {
				out[id] = out[id] || ok
			}
		}
	}
	return out, nil
}

// Entries returns up to limit records with N above since.
func (c *Centre) Entries(since uint64, limit int) ([]Record, error) {
	return c.books().Entries(since, limit)
}

// Conflicts returns every recorded conflict.
func (c *Centre) Conflicts() ([]Conflict, error) { return c.books().Conflicts() }

// GateState is the centre's view of one gate.
type GateState struct {
	Venue            string    `json:"venue"`
	Gate             string    `json:"gate"`
	Event            string    `json:"event,omitempty"`
	Online           bool      `json:"online"`
	LastSeen         time.Time `json:"last_seen,omitzero"`
	Instance         string    `json:"instance,omitempty"`
	Backlog          int       `json:"backlog"` // outbox records the gate last reported
	LastSeq          uint64    `json:"last_seq"`
	StoredTo         uint64    `json:"stored_to"`
	Entries          int       `json:"entries"`
	Conflicts        int       `json:"conflicts"`
	WhitelistVersion uint64    `json:"whitelist_version"`
	ClockOffsetMs    int64     `json:"clock_offset_ms"`
	// Locked: the operator locked the gate's broker login (lock-gate);
	// filled in when read, from the login.
	Locked bool `json:"locked,omitempty"`
}

// GateStatus records a gate's heartbeat or will.
func (c *Centre) GateStatus(venue string, s *wire.Status) error {
	now := c.now().UTC()
	return c.books().UpdateGate(venue, s.Gate, func(g *GateState) {
		g.Online = s.Online
		if !s.Online {
			return
		}
		g.LastSeen, g.Backlog, g.LastSeq, g.WhitelistVersion, g.ClockOffsetMs = now, s.Outbox, s.LastSeq, s.WhitelistVersion, s.ClockOffsetMs
		if s.Event != "" {
			g.Event = s.Event
		}
		if s.Instance != "" {
			g.Instance = s.Instance
		}
	})
}

// NoteGate records that a gate exists for an event (from its hello), so
// deltas of that event are published to its venue.
func (c *Centre) NoteGate(venue, gate, event string) error {
	now := c.now().UTC()
	return c.books().UpdateGate(venue, gate, func(g *GateState) { g.Event = event; g.LastSeen = now })
}

// Gates returns every gate the centre has heard of.
// Online follows the heartbeat (GateState.Live).
func (c *Centre) Gates() ([]GateState, error) { return c.gatesNow() }

// Venues returns the venues with a gate of the event.
func (c *Centre) Venues(event string) ([]string, error) {
	gs, err := c.Gates()
	seen := map[string]bool{}
	var out []string
	for _, g := range gs {
		if g.Event == event && !seen[g.Venue] {
			seen[g.Venue] = true
			out = append(out, g.Venue)
		}
	}
	return out, err
}

// Broker credentials of gates, for the embedded broker. Passwords are
// random 128-bit strings, so one salted SHA-256 is enough to store them.

type gateUser struct {
	Venue string `json:"venue"`
	Gate  string `json:"gate"`
	Salt  []byte `json:"salt"`
	Hash  []byte `json:"hash"`
	// Locked: the broker refuses this login (gatesync lock-gate).
	Locked bool `json:"locked,omitempty"`
}

func passHash(salt []byte, pass string) []byte {
	h := sha256.Sum256(append(bytes.Clone(salt), pass...))
	return h[:]
}

// AddGateUser creates (or replaces) the broker credentials of a gate and
// returns its new password. The username is the gate id.
func (c *Centre) AddGateUser(venue, gate string) (string, error) {
	if !wire.ValidID(venue) || !wire.ValidID(gate) {
		return "", fmt.Errorf("venue %q and gate %q: use 1-64 letters, digits, '.', '_' or '-'", venue, gate)
	}
	var r [16]byte
	rand.Read(r[:])
	pass := hex.EncodeToString(r[:])
	u := gateUser{Venue: venue, Gate: gate, Salt: make([]byte, 16)}
	rand.Read(u.Salt)
	u.Hash = passHash(u.Salt, pass)
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bUsers)
		if v := b.Get([]byte(gate)); v != nil {
			var old gateUser
			if json.Unmarshal(v, &old) == nil && old.Venue != venue {
				return fmt.Errorf("gate id %q is taken at venue %q: gate ids are broker usernames and must be unique", gate, old.Venue)
			}
		}
		v, _ := json.Marshal(u)
		return b.Put([]byte(gate), v)
	})
	return pass, err
}

// CheckGateUser checks broker credentials; it returns the gate's venue.
func (c *Centre) CheckGateUser(user, pass string) (venue string, ok bool) {
	c.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bUsers).Get([]byte(user))
		var u gateUser
		if v == nil || json.Unmarshal(v, &u) != nil {
			return nil
		}
		if subtle.ConstantTimeCompare(passHash(u.Salt, pass), u.Hash) == 1 && !u.Locked {
			venue, ok = u.Venue, true
		}
		return nil
	})
	return venue, ok
}

// GateVenue returns the venue of a gate added with AddGateUser, for
// client-certificate logins (the certificate's common name is the gate id).
func (c *Centre) GateVenue(gate string) (venue string, ok bool) {
	c.db.View(func(tx *bolt.Tx) error {
		var u gateUser
		if v := tx.Bucket(bUsers).Get([]byte(gate)); v != nil && json.Unmarshal(v, &u) == nil && !u.Locked {
			venue, ok = u.Venue, true
		}
		return nil
	})
	return venue, ok
}

// APITokenFile holds the HTTP API's bearer token, created by init.
const APITokenFile = "api.token"

// CreateAPIToken writes a new random API token to dir unless one exists,
// and returns the token in the file.
func CreateAPIToken(dir string) (string, error) {
	path := filepath.Join(dir, APITokenFile)
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	var r [24]byte
	rand.Read(r[:])
	tok := hex.EncodeToString(r[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("write API token: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return "", err
	}
	return tok, f.Close()
}

// ReadAPIToken reads dir's API token.
func ReadAPIToken(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, APITokenFile))
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New(filepath.Join(dir, APITokenFile) + " is empty")
	}
	return tok, nil
}
