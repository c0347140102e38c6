package centre

import (
	"encoding/json"

	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	bolt "go.etcd.io/bbolt"
)

// ReentryBook is an optional capability of an IngestStore that several
// instances share: it keeps which tickets allow re-entry. The primary,
// which issues tickets, writes them; every instance reads them, so a
// conflict is decided alike whichever instance stores the batch, even one
// whose central.db holds no tickets.
type ReentryBook interface {
	// NoteReentry records that the tickets allow re-entry.
	NoteReentry(ids []verify.TicketID) error
	// Reentry returns which of ids allow re-entry.
	Reentry(ids []verify.TicketID) (map[verify.TicketID]bool, error)
}

// TrustBook is an optional capability of an IngestStore that several
// instances share: it keeps the trust list (sealed by the root key) the
// primary signs tickets under, so an instance whose central.db holds no
// issuer keys can still check the codes gates send up (proof of
// presentation).
type TrustBook interface {
	// NoteTrust stores a sealed trust list unless a newer one is stored.
	NoteTrust(env *verify.Envelope, version uint64) error
	// SharedTrust returns the stored trust list, nil when none is.
	SharedTrust() (*verify.Envelope, error)
}

// ShareTrust writes the current trust list to the books when they are a
// TrustBook; the primary calls it on start and with every delta that
// carries a new one.
func (c *Centre) ShareTrust() error {
	tb, ok := c.books().(TrustBook)
	if !ok {
		return nil
	}
	env, err := c.TrustList()
	if err != nil {
		return err
	}
	tl, err := verify.OpenTrustList(env, c.RootPublic())
	if err != nil {
		return err
	}
	if len(tl.Keys) == 0 {
		return nil // not the primary: nothing to share
	}
	return tb.NoteTrust(env, tl.Version)
}

// sharedTrust reads the trust list another instance shared, nil when
// there is none.
func (c *Centre) sharedTrust() (*verify.TrustList, error) {
	tb, ok := c.books().(TrustBook)
	if !ok {
		return nil, nil
	}
	env, err := tb.SharedTrust()
	if err != nil || env == nil {
		return nil, err
	}
	return verify.OpenTrustList(env, c.RootPublic())
}

// ShareReentry writes every re-entry ticket of central.db to the books
// when they are a ReentryBook, and returns how many; the primary calls it
// on start, and ShareReentryDelta keeps the books current.
func (c *Centre) ShareReentry() (int, error) {
	rb, ok := c.books().(ReentryBook)
	if !ok {
		return 0, nil
	}
	var ids []verify.TicketID
	err := c.db.View(func(tx *bolt.Tx) (err error) {
		ids, err = reentryTickets(tx)
		return err
	})
	if err != nil {
		return 0, err
	}
	for i := 0; i < len(ids); i += 10_000 {
		if err := rb.NoteReentry(ids[i:min(i+10_000, len(ids))]); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// ShareReentryDelta writes a delta's re-entry tickets to the books when
// they are a ReentryBook (every one in central.db for a delta too large to
// list its tickets). The publisher calls it before publishing the delta,
// so no gate admits a ticket the books do not know yet.
func (c *Centre) ShareReentryDelta(d *wire.Delta) error {
	if d.TrustList != nil {
		if err := c.ShareTrust(); err != nil {
			return err
		}
	}
	rb, ok := c.books().(ReentryBook)
	if !ok {
		return nil
	}
	if d.Snapshot {
		_, err := c.ShareReentry()
		return err
	}
	var ids []verify.TicketID
	for _, t := range d.Tickets {
		if t.Flags&verify.FlagReentry != 0 {
			ids = append(ids, t.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return rb.NoteReentry(ids)
}

// reentryTickets lists the tickets of central.db that allow re-entry.
func reentryTickets(tx *bolt.Tx) ([]verify.TicketID, error) {
	var ids []verify.TicketID
	err := tx.Bucket(bTickets).ForEach(func(_, v []byte) error {
		var t Ticket
		if err := json.Unmarshal(v, &t); err != nil {
			return err
		}
		if t.Flags&verify.FlagReentry != 0 {
			ids = append(ids, t.ID)
		}
		return nil
	})
	return ids, err
}
