package sales

import (
	"context"
	"crypto/ed25519"
	"errors"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/verify"
)

// Issuer makes, withdraws and re-signs tickets; the centre implements it
// (CentreIssuer), and its whitelist deltas carry each change to the gates.
// Implementations must be safe for concurrent use.
type Issuer interface {
	// Issue signs Count tickets.
	Issue(ctx context.Context, r IssueRequest) ([]IssuedTicket, error)
	// Revoke withdraws a ticket; revoking twice is not an error.
	Revoke(ctx context.Context, id, reason string) error
	// Reissue signs a ticket again with a higher serial, bound to
	// deviceKey when it is set; gates then refuse the older code.
	Reissue(ctx context.Context, id string, deviceKey ed25519.PublicKey) (IssuedTicket, error)
}

// IssueRequest describes the tickets of one paid order.
type IssueRequest struct {
	Event     string
	Count     int
	NotBefore time.Time
	NotAfter  time.Time
	Zone      string
	Reentry   bool
	// DeviceKey is the buyer's phone key for rotating tickets.
	DeviceKey ed25519.PublicKey
	// Key makes the request idempotent at the issuer (the order number):
	// a retry after a lost answer gets the same tickets, never new ones.
	Key string
	// Holders are the masked real-name holders ("张*三 ****1234"), one per
	// ticket, for real-name events; gates show them to staff.
	Holders []string
}

// HolderSetter is an optional capability of an Issuer: it can change the
// masked holder gates show for a ticket, after a transfer.
type HolderSetter interface {
	SetHolder(ctx context.Context, id, holder string) error
}

// IssuedTicket is what the buyer's phone needs of a ticket.
type IssuedTicket struct {
	ID     string
	Serial uint16
	// Code is the static QR text; a rotating ticket's phone makes its own
	// codes from the credential.
	Code       string
	Credential []byte
}

// DeviceKeyBinder is an optional capability of an Issuer: it can bind a
// ticket to a key the buyer's phone made. Events with rotating codes need
// it, and NewServer refuses them otherwise, before anyone pays.
type DeviceKeyBinder interface {
	BindsDeviceKeys() bool
}

// ErrDeviceKeys means an issuer cannot bind a ticket to a phone's key;
// issuers that are not DeviceKeyBinders return it for a DeviceKey.
var ErrDeviceKeys = errors.New("this issuer cannot bind tickets to a phone's device key")

// CentreIssuer issues through an open *centre.Centre.
type CentreIssuer struct {
	C *centre.Centre
}

func issued(t *centre.Ticket) IssuedTicket {
	it := IssuedTicket{ID: t.ID.String(), Serial: t.Serial, Credential: t.Credential}
	if len(t.DeviceKey) == 0 {
		it.Code = t.Code()
	}
	return it
}

// BindsDeviceKeys implements DeviceKeyBinder: the centre binds tickets to
// the buyer's phone key (centre.IssueRequest.DeviceKey, ReissueWithDevice).
func (CentreIssuer) BindsDeviceKeys() bool { return true }

// Issue implements Issuer.
func (ci CentreIssuer) Issue(_ context.Context, r IssueRequest) ([]IssuedTicket, error) {
	ts, err := ci.C.Issue(centre.IssueRequest{Event: r.Event, Count: r.Count, NotBefore: r.NotBefore,
		NotAfter: r.NotAfter, Zone: r.Zone, Reentry: r.Reentry, DeviceKey: r.DeviceKey, Holders: r.Holders, Key: r.Key})
	if err != nil {
		return nil, err
	}
	out := make([]IssuedTicket, len(ts))
	for i := range ts {
		out[i] = issued(&ts[i])
	}
	return out, nil
}

// Revoke implements Issuer.
func (ci CentreIssuer) Revoke(_ context.Context, id, reason string) error {
	tid, err := verify.ParseTicketID(id)
	if err != nil {
		return err
	}
	_, err = ci.C.Revoke(tid, reason)
	return err
}

// Reissue implements Issuer.
func (ci CentreIssuer) Reissue(_ context.Context, id string, deviceKey ed25519.PublicKey) (IssuedTicket, error) {
	tid, err := verify.ParseTicketID(id)
	if err != nil {
		return IssuedTicket{}, err
	}
	var t *centre.Ticket
	if len(deviceKey) > 0 {
		t, err = ci.C.ReissueWithDevice(tid, deviceKey)
	} else {
		t, err = ci.C.Reissue(tid)
	}
	if err != nil {
		return IssuedTicket{}, err
	}
	return issued(t), nil
}

// SetHolder implements HolderSetter.
func (ci CentreIssuer) SetHolder(_ context.Context, id, holder string) error {
	tid, err := verify.ParseTicketID(id)
	if err != nil {
		return err
	}
	_, err = ci.C.SetHolder(tid, holder)
	return err
}

// rotatingCredential is what a phone needs to sign its own codes: the
// credential of a rotating ticket; static tickets show their code instead.
func rotatingCredential(it IssuedTicket) []byte {
	if it.Code != "" {
		return nil
	}
	return it.Credential
}
