package verify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// MarshalText writes the hex form.
func (id TicketID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText reads the hex form.
func (id *TicketID) UnmarshalText(b []byte) error {
	v, err := ParseTicketID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// TicketEntry is one ticket of an event's whitelist, as the gate stores it.
// It repeats what the credential carries so the gate can check a short
// rotating code and spot superseded serials.
type TicketEntry struct {
	ID        TicketID          `json:"id"`
	Serial    uint16            `json:"serial"`
	Flags     uint8             `json:"flags,omitempty"`
	NotBefore time.Time         `json:"not_before,omitzero"`
	NotAfter  time.Time         `json:"not_after,omitzero"`
	Zone      string            `json:"zone,omitempty"`
	DeviceKey ed25519.PublicKey `json:"device_key,omitempty"`
	Holder    string            `json:"holder,omitempty"` // masked holder name for an identity check
}

// Revocation withdraws a ticket: refunded, cancelled or reported stolen.
type Revocation struct {
	ID     TicketID  `json:"id"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// Bundle provisions an air-gapped gate: everything it needs to decide for
// one event. Version rises with every change at the centre.
type Bundle struct {
	Version     uint64        `json:"version"`
	CreatedAt   time.Time     `json:"created_at"`
	Event       string        `json:"event"`
	TrustList   *Envelope     `json:"trust_list"`
	Tickets     []TicketEntry `json:"tickets"`
	Revocations []Revocation  `json:"revocations"`
}

// BundleFile is the file `gatesync export` writes: the root public key the
// bundle claims, and the root-signed bundle.
type BundleFile struct {
	RootKey ed25519.PublicKey `json:"root_public_key"`
	Bundle  *Envelope         `json:"bundle"`
}

// Sentinel errors of OpenBundle.
var (
	ErrOtherRoot = errors.New("bundle is signed by another root key")
)

// Fingerprint is a short, human-comparable name for a public key.
func Fingerprint(pub ed25519.PublicKey) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// OpenBundle reads and verifies a bundle file. With pinned set (the gate
// already trusts a root) the bundle must be signed by that key; otherwise
// the key in the file is taken on first use and returned.
func OpenBundle(data []byte, pinned ed25519.PublicKey) (*Bundle, *TrustList, ed25519.PublicKey, error) {
	var f BundleFile
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(&f); err != nil {
		return nil, nil, nil, fmt.Errorf("not a gated bundle: %w", err)
	}
	if len(f.RootKey) != ed25519.PublicKeySize {
		return nil, nil, nil, errors.New("not a gated bundle: no root public key")
	}
	root := f.RootKey
	if pinned != nil {
		if !pinned.Equal(f.RootKey) {
			return nil, nil, nil, fmt.Errorf("%w: this gate trusts root %s, the bundle names root %s",
				ErrOtherRoot, Fingerprint(pinned), Fingerprint(f.RootKey))
		}
		root = pinned
	}
	var b Bundle
	if err := f.Bundle.Open(TypeBundle, root, &b); err != nil {
		return nil, nil, nil, err
	}
	if b.Event == "" {
		return nil, nil, nil, errors.New("bundle names no event")
	}
	tl, err := OpenTrustList(b.TrustList, root)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("bundle trust list: %w", err)
	}
	return &b, tl, root, nil
}
