package centre

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"

	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	bolt "go.etcd.io/bbolt"
	bolterr "go.etcd.io/bbolt/errors"
)

// Files in a centre directory.
const (
	RootKeyFile = "root.key"
	RootPubFile = "root.pub"
	DBFile      = "central.db"
	DevicesDir  = "devices" // phone simulator: device keys of rotating tickets issued here
)

var (
	bMeta    = []byte("meta")
	bKeys    = []byte("keys")
	bTickets = []byte("tickets")
	bRevoked = []byte("revocations")
	kVersion = []byte("version")
)

// Errors callers branch on.
var (
	ErrNotInitialised = errors.New("not a gatesync directory")
	ErrExists         = errors.New("directory already initialised")
	ErrNoTicket       = errors.New("no such ticket")
	// ErrInUse: another process (gatesync serve) holds central.db open.
	ErrInUse = errors.New("in use by another gatesync process")
)

// Centre is an open centre directory.
type Centre struct {
	dir  string
	db   *bolt.DB
	root ed25519.PrivateKey
	now  func() time.Time

	onChange atomic.Pointer[func()]
	ingest   atomic.Pointer[IngestStore] // nil: the books are in db (ingest.go)

	onGateLogin atomic.Pointer[func(venue, gate string)] // gates.go
	health      atomic.Pointer[ingestFault]              // nil: healthy (gates.go)
	rates       rateBook                                 // admission rates of gates, for sanity alerts (ingest_proof.go)
}

// Ticket is the centre's record of an issued ticket.
type Ticket struct {
	ID         verify.TicketID   `json:"id"`
	Event      string            `json:"event"`
	Serial     uint16            `json:"serial"`
	KeyID      uint16            `json:"kid"`
	Flags      uint8             `json:"flags,omitempty"`
	NotBefore  time.Time         `json:"not_before,omitzero"`
	NotAfter   time.Time         `json:"not_after,omitzero"`
	Zone       string            `json:"zone,omitempty"`
	DeviceKey  ed25519.PublicKey `json:"device_key,omitempty"`
	Holder     string            `json:"holder,omitempty"` // masked real name and id, shown to gate staff
	IssuedAt   time.Time         `json:"issued_at"`
	Credential []byte            `json:"credential"`
}

// Code is the QR text of a static ticket; rotating tickets have none.
func (t *Ticket) Code() string { return verify.StaticCode(t.Credential) }

// Init creates a centre directory with a root key and a first issuer key.
func Init(dir string, now func() time.Time) error {
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, RootKeyFile)); err == nil {
		return fmt.Errorf("%w: %s holds a root key already; keep it, or choose another --dir", ErrExists, dir)
	}
	root := newKey()
	if err := WritePrivateKey(filepath.Join(dir, RootKeyFile), root); err != nil {
		return fmt.Errorf("write root key: %w", err)
	}
	if err := WritePublicKey(filepath.Join(dir, RootPubFile), root.Public().(ed25519.PublicKey)); err != nil {
		return fmt.Errorf("write root public key: %w", err)
	}
	c, err := Open(dir, now)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err = c.AddIssuerKey(time.Time{}); err != nil {
		return err
	}
	_, err = CreateAPIToken(dir)
	return err
}

// Open opens an initialised centre directory.
func Open(dir string, now func() time.Time) (*Centre, error) {
	if now == nil {
		now = time.Now
	}
	root, err := ReadPrivateKey(filepath.Join(dir, RootKeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s has no %s; run gatesync init --dir %s first", ErrNotInitialised, dir, RootKeyFile, dir)
	}
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if errors.Is(err, bolterr.ErrTimeout) {
		return nil, fmt.Errorf("%s is %w (while gatesync serve runs, pass --server URL to issue and revoke)", filepath.Join(dir, DBFile), ErrInUse)
	}
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range append([][]byte{bMeta, bKeys, bTickets, bRevoked, bDeltas, bEventVer}, syncBuckets...) {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Centre{dir: dir, db: db, root: root, now: now}, nil
}

// Close closes the store.
func (c *Centre) Close() error { return c.db.Close() }

// RootPublic is the root public key gates pin.
func (c *Centre) RootPublic() ed25519.PublicKey { return c.root.Public().(ed25519.PublicKey) }

func bump(tx *bolt.Tx) (uint64, error) {
	m := tx.Bucket(bMeta)
	var v uint64
	if b := m.Get(kVersion); len(b) == 8 {
		v = binary.BigEndian.Uint64(b)
	}
	v++
	return v, m.Put(kVersion, binary.BigEndian.AppendUint64(nil, v))
}

func issuerKeyFile(kid uint16) string { return fmt.Sprintf("issuer-%d.key", kid) }

// AddIssuerKey creates the next issuer key; it becomes the signing key.
// With retireOld set, the previous keys stop being valid at that time;
// until then both are live, so tickets signed by either are admitted.
func (c *Centre) AddIssuerKey(retireOld time.Time) (uint16, error) {
	var kid uint16
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bKeys)
		var keys []verify.IssuerKey
		if err := b.ForEach(func(_, v []byte) error {
			var k verify.IssuerKey
			if err := json.Unmarshal(v, &k); err != nil {
				return err
			}
			keys = append(keys, k)
			return nil
		}); err != nil {
			return err
		}
		kid = uint16(len(keys) + 1)
		priv := newKey()
		if err := WritePrivateKey(filepath.Join(c.dir, issuerKeyFile(kid)), priv); err != nil {
			return fmt.Errorf("write issuer key: %w", err)
		}
		for _, k := range keys {
			if !retireOld.IsZero() && (k.NotAfter.IsZero() || k.NotAfter.After(retireOld)) {
				k.NotAfter = retireOld.UTC()
				v, _ := json.Marshal(k)
				if err := b.Put(binary.BigEndian.AppendUint16(nil, k.KeyID), v); err != nil {
					return err
				}
			}
		}
		k := verify.IssuerKey{KeyID: kid, PublicKey: priv.Public().(ed25519.PublicKey), NotBefore: c.now().UTC().Add(-time.Hour)}
		v, _ := json.Marshal(k)
		if err := b.Put(binary.BigEndian.AppendUint16(nil, kid), v); err != nil {
			return err
		}
		ver, err := bump(tx)
		if err != nil {
			return err
		}
		// Every event's gates get the new trust list as a delta.
		evs := events(tx)
		if len(evs) == 0 {
			return nil
		}
		tl, err := c.trustList(tx)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if err := logDelta(tx, ver, &wire.Delta{Event: ev, CreatedAt: c.now().UTC(), TrustList: tl}); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		c.changed()
	}
	return kid, err
}

// TrustList returns the current trust list, sealed by the root key.
func (c *Centre) TrustList() (*verify.Envelope, error) {
	var env *verify.Envelope
	err := c.db.View(func(tx *bolt.Tx) (err error) { env, err = c.trustList(tx); return err })
	return env, err
}

func (c *Centre) trustList(tx *bolt.Tx) (*verify.Envelope, error) {
	l, err := issuerKeys(tx)
	if err != nil {
		return nil, err
	}
	l.IssuedAt = c.now().UTC()
	return verify.Seal(verify.TypeTrustList, l, c.root)
}

func version(tx *bolt.Tx) uint64 {
	if b := tx.Bucket(bMeta).Get(kVersion); len(b) == 8 {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// signingKey returns the newest issuer key that is valid now.
func (c *Centre) signingKey(tx *bolt.Tx) (uint16, ed25519.PrivateKey, error) {
	now := c.now()
	var best *verify.IssuerKey
	err := tx.Bucket(bKeys).ForEach(func(_, v []byte) error {
		var k verify.IssuerKey
		if err := json.Unmarshal(v, &k); err != nil {
			return err
		}
		if k.ValidAt(now) && (best == nil || k.KeyID > best.KeyID) {
			best = &k
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	if best == nil {
		return 0, nil, errors.New("no issuer key is valid now: run gatesync rotate-key")
	}
	priv, err := ReadPrivateKey(filepath.Join(c.dir, issuerKeyFile(best.KeyID)))
	return best.KeyID, priv, err
}

// IssueRequest describes a batch of tickets.
type IssueRequest struct {
	Event     string
	Count     int
	NotBefore time.Time
	NotAfter  time.Time
	Zone      string
	Reentry   bool
	// Rotating binds each ticket to a device key. The centre then plays the
	// phone: it keeps the device keys under devices/ so `gatesync present`
	// can show codes (for demos and tests; a real phone keeps its own key).
	Rotating bool
	// DeviceKey binds every ticket to this phone key instead (the phone
	// made it and keeps the private half); it excludes Rotating.
	DeviceKey ed25519.PublicKey
	// Key, when set, makes the request idempotent: issuing again with the
	// same key returns the tickets the first call issued, so a caller that
	// lost the answer (a sales back end after a timeout) never issues twice.
	Key string
	// Holders, when set, are the masked holders (e.g. "张*三 ****1234"),
	// one per ticket; gates show them to staff for an identity check.
	Holders []string
}

// Issue signs and registers tickets.
func (c *Centre) Issue(r IssueRequest) ([]Ticket, error) {
	if r.Event == "" {
		return nil, errors.New("no event: pass --event EVENT")
	}
	if len(r.Holders) > 0 && len(r.Holders) != r.Count {
		return nil, fmt.Errorf("%d holders for %d tickets: give one per ticket or none", len(r.Holders), r.Count)
	}
	for _, h := range r.Holders {
		if len(h) > MaxHolderLen {
			return nil, fmt.Errorf("holder %q: at most %d bytes", h, MaxHolderLen)
		}
	}
	if r.Count < 1 || r.Count > 1_000_000 {
		return nil, fmt.Errorf("count %d: issue between 1 and 1000000 tickets at a time", r.Count)
	}
	if !r.NotBefore.IsZero() && !r.NotAfter.IsZero() && !r.NotAfter.After(r.NotBefore) {
		return nil, errors.New("--not-after must be later than --not-before")
	}
	if err := checkDeviceRequest(r); err != nil {
		return nil, err
	}
	if r.Rotating {
		if err := os.MkdirAll(filepath.Join(c.dir, DevicesDir), 0o700); err != nil {
			return nil, err
		}
	}
	var out []Ticket
	repeat := false
	err := c.db.Update(func(tx *bolt.Tx) error {
		if r.Key != "" {
			var err error
			if out, err = issuedForKey(tx, r); err != nil || out != nil {
				repeat = out != nil
				return err
			}
		}
		kid, priv, err := c.signingKey(tx)
		if err != nil {
			return err
		}
		tag := verify.TagOf(r.Event)
		for i := 0; i < r.Count; i++ {
			t := Ticket{Event: r.Event, Serial: 1, KeyID: kid, NotBefore: r.NotBefore.UTC(), NotAfter: r.NotAfter.UTC(), Zone: r.Zone, IssuedAt: c.now().UTC()}
			if len(r.Holders) > 0 {
				t.Holder = r.Holders[i]
			}
			rand.Read(t.ID[:])
			if r.Reentry {
				t.Flags |= verify.FlagReentry
			}
			if r.Rotating {
				dev := newKey()
				if err := WritePrivateKey(filepath.Join(c.dir, DevicesDir, t.ID.String()+".key"), dev); err != nil {
					return err
				}
				t.DeviceKey = dev.Public().(ed25519.PublicKey)
				t.Flags |= verify.FlagDeviceKey
			}
			bindDevice(&t, r.DeviceKey)
			if err := c.sign(&t, tag, priv); err != nil {
				return err
			}
			if err := putTicket(tx, &t); err != nil {
				return err
			}
			out = append(out, t)
		}
		if err := rememberKey(tx, r.Key, out); err != nil {
			return err
		}
		d := &wire.Delta{Event: r.Event}
		if len(out) <= wire.MaxDeltaItems {
			for i := range out {
				d.Tickets = append(d.Tickets, entryOf(&out[i]))
			}
		} else {
			d.Snapshot = true
		}
		return c.logChange(tx, d)
	})
	if err == nil && !repeat {
		c.changed()
	}
	return out, err
}

func (c *Centre) sign(t *Ticket, tag verify.EventTag, priv ed25519.PrivateKey) error {
	cred := verify.Credential{KeyID: t.KeyID, Flags: t.Flags, Ticket: t.ID, Event: tag, Serial: t.Serial,
		NotBefore: t.NotBefore, NotAfter: t.NotAfter, Zone: t.Zone, DeviceKey: t.DeviceKey}
	b, err := cred.Sign(priv)
	if err != nil {
		return err
	}
	t.Credential = b
	return nil
}

func putTicket(tx *bolt.Tx, t *Ticket) error {
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return tx.Bucket(bTickets).Put(t.ID[:], v)
}

// updateTicket stores t and logs it, in tx, as one change of its event.
func (c *Centre) updateTicket(tx *bolt.Tx, t *Ticket) error {
	if err := putTicket(tx, t); err != nil {
		return err
	}
	return c.logChange(tx, &wire.Delta{Event: t.Event, Tickets: []verify.TicketEntry{entryOf(t)}})
}

// logChange records d, in tx, as the change at the next version.
func (c *Centre) logChange(tx *bolt.Tx, d *wire.Delta) error {
	ver, err := bump(tx)
	if err != nil {
		return err
	}
	d.CreatedAt = c.now().UTC()
	return logDelta(tx, ver, d)
}

func getTicket(tx *bolt.Tx, id verify.TicketID) (*Ticket, error) {
	v := tx.Bucket(bTickets).Get(id[:])
	if v == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoTicket, id)
	}
	var t Ticket
	return &t, json.Unmarshal(v, &t)
}

// Ticket returns an issued ticket.
func (c *Centre) Ticket(id verify.TicketID) (*Ticket, error) {
	var t *Ticket
	err := c.db.View(func(tx *bolt.Tx) (err error) { t, err = getTicket(tx, id); return err })
	return t, err
}

// Reissue signs a ticket again with a higher serial (a transfer or a
// replacement); gates then refuse the older serial.
func (c *Centre) Reissue(id verify.TicketID) (*Ticket, error) { return c.reissue(id, nil) }

// reissue re-signs a ticket, bound to dev when it is set.
func (c *Centre) reissue(id verify.TicketID, dev ed25519.PublicKey) (*Ticket, error) {
	var t *Ticket
	err := c.db.Update(func(tx *bolt.Tx) error {
		var err error
		if t, err = getTicket(tx, id); err != nil {
			return err
		}
		if t.Serial == 0xffff {
			return errors.New("ticket has been re-issued too often")
		}
		kid, priv, err := c.signingKey(tx)
		if err != nil {
			return err
		}
		t.Serial++
		t.KeyID = kid
		bindDevice(t, dev)
		t.IssuedAt = c.now().UTC()
		if err := c.sign(t, verify.TagOf(t.Event), priv); err != nil {
			return err
		}
		return c.updateTicket(tx, t)
	})
	if err == nil {
		c.changed()
	}
	return t, err
}

// Revoke withdraws a ticket. Revoking twice keeps the first record.
func (c *Centre) Revoke(id verify.TicketID, reason string) (*verify.Revocation, error) {
	var r verify.Revocation
	err := c.db.Update(func(tx *bolt.Tx) error {
		t, err := getTicket(tx, id)
		if err != nil {
			return err
		}
		if v := tx.Bucket(bRevoked).Get(id[:]); v != nil {
			return json.Unmarshal(v, &r)
		}
		r = verify.Revocation{ID: id, At: c.now().UTC(), Reason: reason}
		v, _ := json.Marshal(r)
		if err := tx.Bucket(bRevoked).Put(id[:], v); err != nil {
			return err
		}
		return c.logChange(tx, &wire.Delta{Event: t.Event, Revocations: []verify.Revocation{r}})
	})
	if err == nil {
		c.changed()
	}
	return &r, err
}

// Present plays the phone of a rotating ticket issued here: it signs time
// t with the ticket's device key and returns the QR text.
func (c *Centre) Present(id verify.TicketID, t time.Time, short bool) (string, error) {
	tk, err := c.Ticket(id)
	if err != nil {
		return "", err
	}
	if len(tk.DeviceKey) == 0 {
		return "", fmt.Errorf("ticket %s is static: its code is %s", id, tk.Code())
	}
	dev, err := ReadPrivateKey(filepath.Join(c.dir, DevicesDir, id.String()+".key"))
	if err != nil {
		return "", fmt.Errorf("device key of %s: %w (only tickets issued with --rotating in this directory can be presented)", id, err)
	}
	return verify.RotatingCode(tk.Credential, dev, t, short)
}

// Export builds the signed provisioning bundle of one event.
func (c *Centre) Export(event string) ([]byte, error) {
	trust, err := c.TrustList()
	if err != nil {
		return nil, err
	}
	b := verify.Bundle{Event: event, CreatedAt: c.now().UTC(), TrustList: trust, Tickets: []verify.TicketEntry{}, Revocations: []verify.Revocation{}}
	err = c.db.View(func(tx *bolt.Tx) error {
		b.Version = version(tx)
		inEvent := map[verify.TicketID]bool{}
		err := tx.Bucket(bTickets).ForEach(func(_, v []byte) error {
			var t Ticket
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			if t.Event != event {
				return nil
			}
			inEvent[t.ID] = true
			b.Tickets = append(b.Tickets, entryOf(&t))
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bRevoked).ForEach(func(_, v []byte) error {
			var r verify.Revocation
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if inEvent[r.ID] {
				b.Revocations = append(b.Revocations, r)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if len(b.Tickets) == 0 {
		return nil, fmt.Errorf("event %q has no tickets in %s: issue some first (gatesync issue --event %s)", event, c.dir, event)
	}
	sort.Slice(b.Revocations, func(i, j int) bool { return string(b.Revocations[i].ID[:]) < string(b.Revocations[j].ID[:]) })
	env, err := verify.Seal(verify.TypeBundle, &b, c.root)
	if err != nil {
		return nil, err
	}
	return json.Marshal(verify.BundleFile{RootKey: c.RootPublic(), Bundle: env})
}
