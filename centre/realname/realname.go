// Package realname keeps the identity of a real-name ticket's holder the
// way Chinese ticketing rules ask and no more: the id number only as an
// HMAC under a server secret (enough to enforce one id, one ticket per
// show, useless to anyone without the secret), the name and id number
// encrypted with AES-GCM under a server key (so staff can check a holder at
// the door when asked), masked in every response, and purged a configured
// number of days after the event.
package realname

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// KeySize is the size of both server secrets.
const KeySize = 32

// Errors callers branch on.
var (
	// ErrBadID means the id number is not an 18-character resident identity
	// card number with a correct check character.
	ErrBadID = errors.New("id number is not a valid 18-character resident identity card number")
	// ErrBadName means the name is empty, too long or has control characters.
	ErrBadName = errors.New("name must be 1 to 30 characters")
	// ErrSealed means a sealed record does not open under this key.
	ErrSealed = errors.New("real-name record does not decrypt under the configured key")
)

// Holder is a ticket holder's identity in the clear. It lives in memory
// only while a request is handled.
type Holder struct {
	Name string `json:"name"`
	ID   string `json:"id_number"`
}

// Masked is what responses show of a holder.
type Masked struct {
	Name string `json:"name"`
	ID   string `json:"id_number"`
}

// Mask returns the holder's masked form.
func (h Holder) Mask() Masked { return Masked{Name: MaskName(h.Name), ID: MaskID(h.ID)} }

// Vault holds the two server secrets. It is safe for concurrent use.
type Vault struct {
	macKey []byte
	aead   cipher.AEAD
}

// NewVault takes the HMAC secret and the encryption key, 32 bytes each.
// They must differ, so that leaking one does not give away the other.
func NewVault(macKey, encKey []byte) (*Vault, error) {
	if len(macKey) != KeySize || len(encKey) != KeySize {
		return nil, fmt.Errorf("real-name keys must be %d bytes each (got %d and %d)", KeySize, len(macKey), len(encKey))
	}
	if hmac.Equal(macKey, encKey) {
		return nil, errors.New("real-name HMAC secret and encryption key must differ")
	}
	b, err := aes.NewCipher(encKey)
	if err != nil {
		return nil, err
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &Vault{macKey: append([]byte(nil), macKey...), aead: g}, nil
}

// IDHash is the keyed hash of a normalised id number: the only form in
// which the id is indexed.
func (v *Vault) IDHash(id string) []byte {
	m := hmac.New(sha256.New, v.macKey)
	m.Write([]byte(id))
	return m.Sum(nil)
}

// Seal encrypts h; bind ties the ciphertext to its record (a ticket id)
// so a sealed holder cannot be moved to another ticket.
func (v *Vault) Seal(h Holder, bind []byte) ([]byte, error) {
	plain, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, v.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return v.aead.Seal(nonce, nonce, plain, bind), nil
}

// Open decrypts a sealed holder.
func (v *Vault) Open(sealed, bind []byte) (Holder, error) {
	n := v.aead.NonceSize()
	if len(sealed) < n {
		return Holder{}, ErrSealed
	}
	plain, err := v.aead.Open(nil, sealed[:n], sealed[n:], bind)
	if err != nil {
		return Holder{}, ErrSealed
	}
	var h Holder
	if err := json.Unmarshal(plain, &h); err != nil {
		return Holder{}, ErrSealed
	}
	return h, nil
}

// Normalise checks what a buyer typed and returns the canonical holder:
// the name trimmed, the id number with a capital X.
func Normalise(h Holder) (Holder, error) {
	name := strings.TrimSpace(h.Name)
	if n := utf8.RuneCountInString(name); n == 0 || n > 30 || !utf8.ValidString(name) || strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return Holder{}, ErrBadName
	}
	id, err := NormaliseID(h.ID)
	if err != nil {
		return Holder{}, err
	}
	return Holder{Name: name, ID: id}, nil
}

// NormaliseID checks an 18-character resident identity card number
// (GB 11643-1999: 17 digits and an ISO 7064 MOD 11-2 check character).
func NormaliseID(s string) (string, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if len(s) != 18 {
		return "", ErrBadID
	}
	weights := [17]int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i := 0; i < 17; i++ {
		if s[i] < '0' || s[i] > '9' {
			return "", ErrBadID
		}
		sum += int(s[i]-'0') * weights[i]
	}
	if "10X98765432"[sum%11] != s[17] {
		return "", ErrBadID
	}
	return s, nil
}

// MaskName keeps the first and last character: 张小三 -> 张*三, 李四 -> 李*.
func MaskName(s string) string {
	r := []rune(s)
	switch len(r) {
	case 0:
		return ""
	case 1:
		return "*"
	case 2:
		return string(r[0]) + "*"
	}
	return string(r[0]) + strings.Repeat("*", len(r)-2) + string(r[len(r)-1])
}

// MaskID keeps the last four characters: ****1234.
func MaskID(s string) string {
	if len(s) <= 4 {
		return "****"
	}
	return "****" + s[len(s)-4:]
}

// Retention says how long real-name records outlive their event.
type Retention struct {
	// Days after the event's end; 0 means DefaultRetentionDays.
	Days int
}

// DefaultRetentionDays is kept short: the records serve entry and
// after-sales questions, nothing later.
const DefaultRetentionDays = 30

// PurgeAt is when the records of an event ending at end must be gone.
func (r Retention) PurgeAt(end time.Time) time.Time {
	d := r.Days
	if d <= 0 {
		d = DefaultRetentionDays
	}
	return end.AddDate(0, 0, d)
}

// Due reports whether the records of an event ending at end are due for
// purging at now.
func (r Retention) Due(end, now time.Time) bool { return !now.Before(r.PurgeAt(end)) }
