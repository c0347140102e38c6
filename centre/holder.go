package centre

import (
	"fmt"
	"unicode/utf8"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// MaxHolderLen bounds a masked holder in bytes; gates store at most 255.
const MaxHolderLen = 96

// SetHolder records the masked holder of a ticket (after a transfer to a
// real-name buyer, say) and logs the whitelist delta, so gates show staff
// the new name. The credential does not change: the holder is for an
// identity check by eye, not a signed claim.
func (c *Centre) SetHolder(id verify.TicketID, holder string) (*Ticket, error) {
	if len(holder) > MaxHolderLen || !utf8.ValidString(holder) {
		return nil, fmt.Errorf("holder %q: at most %d bytes of UTF-8", holder, MaxHolderLen)
	}
	var t *Ticket
	err := c.db.Update(func(tx *bolt.Tx) error {
		var err error
		if t, err = getTicket(tx, id); err != nil {
			return err
		}
		if t.Holder == holder {
			return nil
		}
		t.Holder = holder
		return c.updateTicket(tx, t)
	})
	if err == nil {
		c.changed()
	}
	return t, err
}
