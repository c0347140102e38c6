package verify

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Wire constants of token format version 1; docs/token.md is the normative text.
const (
	// FormatVersion is the only credential version this package reads.
	FormatVersion = 1

	// PrefixStatic, PrefixRotating and PrefixRotatingShort start the QR text
	// of the three presentations.
	PrefixStatic        = "G1:"
	PrefixRotating      = "G2:"
	PrefixRotatingShort = "G3:"

	// TicketIDLen is the length of a ticket id: 96 random bits.
	TicketIDLen = 12
	// EventTagLen is the length of the event tag that stands for the event id.
	EventTagLen = 8
	// MaxZoneLen bounds the zone name so a static credential stays at QR version 7.
	MaxZoneLen = 16
	// HolderLen is the length of the optional holder binding.
	HolderLen = 8

	credFixedLen = 35
	sigLen       = ed25519.SignatureSize

	// MaxScanLen is the longest scan text any presentation can have; longer
	// input is refused before decoding.
	MaxScanLen = 512
)

// Credential flags.
const (
	FlagReentry   = 1 << 0 // the holder may leave and come back
	FlagHolder    = 1 << 1 // a holder binding (keyed hash of a real-name id) follows the zone
	FlagDeviceKey = 1 << 2 // a device public key follows; the ticket is presented as a rotating code
	knownFlags    = FlagReentry | FlagHolder | FlagDeviceKey
)

var (
	credDomain = []byte("GATED-CRED-v1\x00")
	rotDomain  = []byte("GATED-ROT-v1\x00")
)

// TicketID is a ticket's random identifier.
type TicketID [TicketIDLen]byte

// String returns the id as lowercase hex, the form used in every command,
// journal record and API.
func (id TicketID) String() string { return hex.EncodeToString(id[:]) }

// ParseTicketID reads the hex form of a ticket id.
func ParseTicketID(s string) (TicketID, error) {
	var id TicketID
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != TicketIDLen {
		return id, fmt.Errorf("ticket id %q: want %d hex characters", s, 2*TicketIDLen)
	}
	copy(id[:], b)
	return id, nil
}

// EventTag is the 8-byte stand-in for an event id inside tokens.
type EventTag [EventTagLen]byte

// TagOf returns the tag of an event id: the first 8 bytes of
// SHA-256("gated/event/v1" || 0x00 || event).
func TagOf(event string) EventTag {
	h := sha256.Sum256(append([]byte("gated/event/v1\x00"), event...))
	var t EventTag
	copy(t[:], h[:EventTagLen])
	return t
}

// Credential is the issuer-signed record of one ticket.
type Credential struct {
	KeyID     uint16
	Flags     uint8
	Ticket    TicketID
	Event     EventTag
	Serial    uint16
	NotBefore time.Time // zero: no lower bound
	NotAfter  time.Time // zero: no upper bound
	Zone      string
	Holder    [HolderLen]byte
	DeviceKey ed25519.PublicKey // set when Flags has FlagDeviceKey

	raw []byte // the encoded credential, signature included, when parsed
}

// Kind is how a ticket was presented.
type Kind uint8

const (
	KindStatic        Kind = iota + 1 // G1: the credential alone
	KindRotating                      // G2: credential plus device-signed time
	KindRotatingShort                 // G3: ticket id plus device-signed time; credential from the whitelist
)

func (k Kind) String() string {
	switch k {
	case KindStatic:
		return "static"
	case KindRotating:
		return "rotating"
	case KindRotatingShort:
		return "rotating-short"
	}
	return "unknown"
}

// Token is a parsed scan: one of the three presentations. Nothing in it is
// verified yet; see Verifier.
type Token struct {
	Kind       Kind
	Credential Credential // for KindRotatingShort only Ticket and Serial are set
	CodeTime   time.Time  // rotating: the time the phone signed
	DeviceSig  []byte     // rotating: the device signature

	signed []byte // the credential bytes the issuer signed
	sig    []byte // the issuer signature
}

// Sentinel parse errors; all mean the scan is malformed.
var (
	ErrMalformed = errors.New("malformed token")
)

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// Encode returns the credential bytes without the signature.
func (c *Credential) encodeBody() ([]byte, error) {
	if len(c.Zone) > MaxZoneLen {
		return nil, fmt.Errorf("zone %q longer than %d bytes", c.Zone, MaxZoneLen)
	}
	if err := checkZone(c.Zone); err != nil {
		return nil, err
	}
	if c.Flags&^knownFlags != 0 {
		return nil, fmt.Errorf("unknown flags %#x", c.Flags)
	}
	if (c.Flags&FlagDeviceKey != 0) != (len(c.DeviceKey) > 0) {
		return nil, errors.New("device key flag and device key disagree")
	}
	if len(c.DeviceKey) > 0 && len(c.DeviceKey) != ed25519.PublicKeySize {
		return nil, errors.New("device key must be 32 bytes")
	}
	nb, err := unixField(c.NotBefore)
	if err != nil {
		return nil, fmt.Errorf("not-before: %w", err)
	}
	na, err := unixField(c.NotAfter)
	if err != nil {
		return nil, fmt.Errorf("not-after: %w", err)
	}
	b := make([]byte, credFixedLen, credFixedLen+len(c.Zone)+HolderLen+ed25519.PublicKeySize+sigLen)
	b[0] = FormatVersion
	b[1] = c.Flags
	binary.BigEndian.PutUint16(b[2:], c.KeyID)
	copy(b[4:16], c.Ticket[:])
	copy(b[16:24], c.Event[:])
	binary.BigEndian.PutUint16(b[24:], c.Serial)
	binary.BigEndian.PutUint32(b[26:], nb)
	binary.BigEndian.PutUint32(b[30:], na)
	b[34] = byte(len(c.Zone))
	b = append(b, c.Zone...)
	if c.Flags&FlagHolder != 0 {
		b = append(b, c.Holder[:]...)
	}
	if c.Flags&FlagDeviceKey != 0 {
		b = append(b, c.DeviceKey...)
	}
	return b, nil
}

func unixField(t time.Time) (uint32, error) {
	if t.IsZero() {
		return 0, nil
	}
	u := t.Unix()
	if u <= 0 || u > 0xffffffff {
		return 0, fmt.Errorf("time %s outside 1970..2106", t.UTC().Format(time.RFC3339))
	}
	return uint32(u), nil
}

func fieldTime(u uint32) time.Time {
	if u == 0 {
		return time.Time{}
	}
	return time.Unix(int64(u), 0).UTC()
}

// checkZone allows the characters that read well on a console and survive
// every scanner: letters, digits, '-', '_' and '.'.
func checkZone(z string) error {
	for i := 0; i < len(z); i++ {
		c := z[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("zone %q: only letters, digits, '-', '_' and '.' are allowed", z)
		}
	}
	return nil
}

// Sign encodes c and signs it with the issuer key, returning the credential
// bytes (signature last).
func (c *Credential) Sign(issuer ed25519.PrivateKey) ([]byte, error) {
	body, err := c.encodeBody()
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(issuer, credMessage(body))
	return append(body, sig...), nil
}

func credMessage(body []byte) []byte {
	return append(append(make([]byte, 0, len(credDomain)+len(body)), credDomain...), body...)
}

// StaticCode returns the static QR text of signed credential bytes.
func StaticCode(cred []byte) string { return PrefixStatic + Base45Encode(cred) }

// RotatingMessage is what the phone's device key signs for a rotating code.
func RotatingMessage(event EventTag, ticket TicketID, serial uint16, t uint32) []byte {
	m := make([]byte, 0, len(rotDomain)+EventTagLen+TicketIDLen+6)
	m = append(m, rotDomain...)
	m = append(m, event[:]...)
	m = append(m, ticket[:]...)
	m = binary.BigEndian.AppendUint16(m, serial)
	return binary.BigEndian.AppendUint32(m, t)
}

// RotatingCode is the phone's side: it signs the time t with the device key
// and returns the QR text. With short set it omits the credential (form G3),
// which a gate can only check when its whitelist holds the device key.
func RotatingCode(cred []byte, device ed25519.PrivateKey, t time.Time, short bool) (string, error) {
	tok, err := parseCredential(cred)
	if err != nil {
		return "", err
	}
	c := &tok.Credential
	if c.Flags&FlagDeviceKey == 0 {
		return "", errors.New("credential carries no device key")
	}
	if !c.DeviceKey.Equal(device.Public()) {
		return "", errors.New("device key does not match the credential")
	}
	u, err := unixField(t)
	if err != nil {
		return "", err
	}
	sig := ed25519.Sign(device, RotatingMessage(c.Event, c.Ticket, c.Serial, u))
	if short {
		b := make([]byte, 0, 2+TicketIDLen+6+sigLen)
		b = append(b, FormatVersion, 0)
		b = append(b, c.Ticket[:]...)
		b = binary.BigEndian.AppendUint16(b, c.Serial)
		b = binary.BigEndian.AppendUint32(b, u)
		b = append(b, sig...)
		return PrefixRotatingShort + Base45Encode(b), nil
	}
	b := append(append([]byte(nil), cred...), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[len(cred):], u)
	b = append(b, sig...)
	return PrefixRotating + Base45Encode(b), nil
}

// Parse reads scan text into a Token. It checks structure only: lengths,
// version, flags and encoding. Any failure wraps ErrMalformed. Parse never
// panics, whatever the input (see FuzzParse).
func Parse(scan []byte) (*Token, error) {
	if len(scan) > MaxScanLen {
		return nil, malformed("scan of %d bytes is longer than any ticket (%d)", len(scan), MaxScanLen)
	}
	s := strings.TrimRight(string(scan), "\r\n")
	if len(s) < 3 {
		return nil, malformed("not a gated ticket")
	}
	// Keyboard-wedge scanners with caps lock or a foreign layout change case;
	// Base45 has no lower-case letters, so folding is lossless.
	s = strings.ToUpper(s)
	prefix, body := s[:3], s[3:]
	if prefix != PrefixStatic && prefix != PrefixRotating && prefix != PrefixRotatingShort {
		return nil, malformed("not a gated ticket")
	}
	b, err := Base45Decode(body)
	if err != nil {
		return nil, malformed("bad base45 text")
	}
	switch prefix {
	case PrefixStatic:
		t, err := parseCredential(b)
		if err != nil {
			return nil, err
		}
		if t.Credential.Flags&FlagDeviceKey != 0 {
			// A credential bound to a phone must come with a fresh device
			// signature, or a screenshot would work forever.
			return nil, malformed("this ticket must be shown as a rotating code")
		}
		t.Kind = KindStatic
		return t, nil
	case PrefixRotating:
		if len(b) < 4+sigLen {
			return nil, malformed("rotating code too short")
		}
		n := len(b) - 4 - sigLen
		t, err := parseCredential(b[:n])
		if err != nil {
			return nil, err
		}
		if t.Credential.Flags&FlagDeviceKey == 0 {
			return nil, malformed("rotating code without a device key")
		}
		t.Kind = KindRotating
		t.CodeTime = fieldTime(binary.BigEndian.Uint32(b[n:]))
		t.DeviceSig = b[n+4:]
		if t.CodeTime.IsZero() {
			return nil, malformed("rotating code without a time")
		}
		return t, nil
	case PrefixRotatingShort:
		if len(b) != 2+TicketIDLen+6+sigLen {
			return nil, malformed("short rotating code of %d bytes, want %d", len(b), 2+TicketIDLen+6+sigLen)
		}
		if b[0] != FormatVersion {
			return nil, malformed("version %d, this gate reads %d", b[0], FormatVersion)
		}
		if b[1] != 0 {
			return nil, malformed("unknown flags %#x", b[1])
		}
		t := &Token{Kind: KindRotatingShort}
		copy(t.Credential.Ticket[:], b[2:14])
		t.Credential.Serial = binary.BigEndian.Uint16(b[14:])
		t.CodeTime = fieldTime(binary.BigEndian.Uint32(b[16:]))
		t.DeviceSig = b[20:]
		if t.CodeTime.IsZero() {
			return nil, malformed("rotating code without a time")
		}
		return t, nil
	}
	return nil, malformed("not a gated ticket")
}

// ParseCredential reads signed credential bytes (as stored in a whitelist
// or produced by Sign).
func ParseCredential(b []byte) (*Credential, error) {
	t, err := parseCredential(b)
	if err != nil {
		return nil, err
	}
	return &t.Credential, nil
}

func parseCredential(b []byte) (*Token, error) {
	if len(b) < credFixedLen+sigLen {
		return nil, malformed("credential of %d bytes is too short", len(b))
	}
	if b[0] != FormatVersion {
		return nil, malformed("version %d, this gate reads %d", b[0], FormatVersion)
	}
	c := Credential{Flags: b[1]}
	if c.Flags&^knownFlags != 0 {
		return nil, malformed("unknown flags %#x", c.Flags)
	}
	c.KeyID = binary.BigEndian.Uint16(b[2:])
	copy(c.Ticket[:], b[4:16])
	copy(c.Event[:], b[16:24])
	c.Serial = binary.BigEndian.Uint16(b[24:])
	c.NotBefore = fieldTime(binary.BigEndian.Uint32(b[26:]))
	c.NotAfter = fieldTime(binary.BigEndian.Uint32(b[30:]))
	zl := int(b[34])
	want := credFixedLen + zl + sigLen
	if c.Flags&FlagHolder != 0 {
		want += HolderLen
	}
	if c.Flags&FlagDeviceKey != 0 {
		want += ed25519.PublicKeySize
	}
	if zl > MaxZoneLen || len(b) != want {
		return nil, malformed("credential length %d does not match its fields (want %d)", len(b), want)
	}
	p := credFixedLen
	c.Zone = string(b[p : p+zl])
	if err := checkZone(c.Zone); err != nil {
		return nil, malformed("%v", err)
	}
	p += zl
	if c.Flags&FlagHolder != 0 {
		copy(c.Holder[:], b[p:p+HolderLen])
		p += HolderLen
	}
	if c.Flags&FlagDeviceKey != 0 {
		c.DeviceKey = ed25519.PublicKey(append([]byte(nil), b[p:p+ed25519.PublicKeySize]...))
		p += ed25519.PublicKeySize
	}
	c.raw = b
	return &Token{Credential: c, signed: b[:p], sig: b[p:]}, nil
}

// Raw returns the signed credential bytes this credential was parsed from.
func (c *Credential) Raw() []byte { return c.raw }
