package centre

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gated-dev/gated/verify"
)

// Device keys a phone made: the centre binds a ticket to the public half
// and never sees the private one, so only that phone can present it.

// ErrDeviceKey means a device key is not a 32-byte Ed25519 public key.
var ErrDeviceKey = errors.New("device key must be a 32-byte Ed25519 public key")

func checkDeviceRequest(r IssueRequest) error {
	if len(r.DeviceKey) == 0 {
		return nil
	}
	if len(r.DeviceKey) != ed25519.PublicKeySize {
		return fmt.Errorf("%w, not %d bytes", ErrDeviceKey, len(r.DeviceKey))
	}
	if r.Rotating {
		return errors.New("a request binds either a phone's device key or, with Rotating, keys the centre keeps: not both")
	}
	return nil
}

// bindDevice binds t to dev when dev is set.
func bindDevice(t *Ticket, dev ed25519.PublicKey) {
	if len(dev) == 0 {
		return
	}
	t.DeviceKey = append(ed25519.PublicKey(nil), dev...)
	t.Flags |= verify.FlagDeviceKey
}

// ReissueWithDevice signs a ticket again with a higher serial, bound to
// the phone key dev: a static ticket becomes rotating, a rotating one
// moves to the new phone. Gates then refuse codes of the older serial,
// so the previous phone's codes stop working once the delta lands. A
// device key the centre kept for the ticket (Rotating) is deleted: the
// centre can no longer present it.
func (c *Centre) ReissueWithDevice(id verify.TicketID, dev ed25519.PublicKey) (*Ticket, error) {
	if len(dev) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w, not %d bytes", ErrDeviceKey, len(dev))
	}
	t, err := c.reissue(id, dev)
	if err != nil {
		return nil, err
	}
	if err := os.Remove(filepath.Join(c.dir, DevicesDir, id.String()+".key")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return t, fmt.Errorf("ticket re-issued, but its old device key stays: %w", err)
	}
	return t, nil
}
