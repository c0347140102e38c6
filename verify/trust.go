package verify

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Document types carried in envelopes. The type is signed, so a document of
// one type can never be passed off as another.
const (
	TypeTrustList = "gated.trustlist.v1"
	TypeBundle    = "gated.bundle.v1"
)

var envDomain = []byte("GATED-DOC-v1\x00")

// Envelope is a signed JSON document: Payload is the exact byte string that
// was signed, so no canonical JSON form is needed.
type Envelope struct {
	Type    string `json:"type"`
	Payload []byte `json:"payload"` // base64 in JSON
	Sig     []byte `json:"sig"`
}

// ErrEnvelope reports an envelope whose type or signature does not verify.
var ErrEnvelope = errors.New("signed document does not verify")

func envMessage(typ string, payload []byte) []byte {
	m := append([]byte(nil), envDomain...)
	m = append(m, typ...)
	m = append(m, 0)
	return append(m, payload...)
}

// Seal marshals v and signs it as a document of type typ.
func Seal(typ string, v any, key ed25519.PrivateKey) (*Envelope, error) {
	p, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &Envelope{Type: typ, Payload: p, Sig: ed25519.Sign(key, envMessage(typ, p))}, nil
}

// Open verifies the envelope against pub and unmarshals its payload into v.
// Unknown fields are refused: a signed document we do not fully understand is
// not one to act on.
func (e *Envelope) Open(typ string, pub ed25519.PublicKey, v any) error {
	if e == nil {
		return fmt.Errorf("%w: missing", ErrEnvelope)
	}
	if e.Type != typ {
		return fmt.Errorf("%w: type %q, want %q", ErrEnvelope, e.Type, typ)
	}
	if len(pub) != ed25519.PublicKeySize || len(e.Sig) != ed25519.SignatureSize ||
		!ed25519.Verify(pub, envMessage(typ, e.Payload), e.Sig) {
		return fmt.Errorf("%w: bad signature on %s", ErrEnvelope, typ)
	}
	if err := strictUnmarshal(e.Payload, v); err != nil {
		return fmt.Errorf("%s: %w", typ, err)
	}
	return nil
}

func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data")
	}
	return nil
}

// IssuerKey is one entry of a trust list: an issuer key the gate accepts,
// when, and for which events.
type IssuerKey struct {
	KeyID     uint16            `json:"kid"`
	PublicKey ed25519.PublicKey `json:"public_key"`
	NotBefore time.Time         `json:"not_before"`
	NotAfter  time.Time         `json:"not_after"`        // zero: open-ended
	Events    []string          `json:"events,omitempty"` // empty: any event
}

// ValidAt reports whether the key may vouch for a ticket at time t.
func (k *IssuerKey) ValidAt(t time.Time) bool {
	return !t.Before(k.NotBefore) && (k.NotAfter.IsZero() || !t.After(k.NotAfter))
}

// Covers reports whether the key is scoped to the event.
func (k *IssuerKey) Covers(event string) bool {
	return len(k.Events) == 0 || slices.Contains(k.Events, event)
}

// TrustList is the root-signed set of issuer keys. Version rises with every
// change; a gate never goes back to a lower one.
type TrustList struct {
	Version  uint64      `json:"version"`
	IssuedAt time.Time   `json:"issued_at"`
	Keys     []IssuerKey `json:"keys"`
}

// Validate checks the list's own consistency.
func (l *TrustList) Validate() error {
	seen := map[uint16]bool{}
	for _, k := range l.Keys {
		if seen[k.KeyID] {
			return fmt.Errorf("trust list: key id %d twice", k.KeyID)
		}
		seen[k.KeyID] = true
		if len(k.PublicKey) != ed25519.PublicKeySize {
			return fmt.Errorf("trust list: key %d: public key of %d bytes", k.KeyID, len(k.PublicKey))
		}
	}
	return nil
}

// Key returns the entry for a key id.
func (l *TrustList) Key(kid uint16) (*IssuerKey, bool) {
	for i := range l.Keys {
		if l.Keys[i].KeyID == kid {
			return &l.Keys[i], true
		}
	}
	return nil, false
}

// OpenTrustList verifies a sealed trust list against the root key.
func OpenTrustList(e *Envelope, root ed25519.PublicKey) (*TrustList, error) {
	var l TrustList
	if err := e.Open(TypeTrustList, root, &l); err != nil {
		return nil, err
	}
	return &l, l.Validate()
}
