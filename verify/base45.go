package verify

import (
	"errors"
)

// base45Alphabet is RFC 9285's alphabet, which is exactly the QR code
// alphanumeric character set, so a Base45 string is encoded in the QR
// alphanumeric mode at 5.5 bits a character.
const base45Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

var base45Index = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(base45Alphabet); i++ {
		t[base45Alphabet[i]] = int8(i)
	}
	return t
}()

// ErrBase45 reports text that is not valid RFC 9285 Base45.
var ErrBase45 = errors.New("invalid base45")

// Base45Encode encodes b as RFC 9285 Base45 text.
func Base45Encode(b []byte) string {
	out := make([]byte, 0, len(b)/2*3+2)
	for i := 0; i+1 < len(b); i += 2 {
		n := int(b[i])<<8 | int(b[i+1])
		out = append(out, base45Alphabet[n%45], base45Alphabet[n/45%45], base45Alphabet[n/2025])
	}
	if len(b)%2 == 1 {
		n := int(b[len(b)-1])
		out = append(out, base45Alphabet[n%45], base45Alphabet[n/45])
	}
	return string(out)
}

// Base45Decode decodes RFC 9285 Base45 text. It rejects characters outside
// the alphabet, a dangling single character and groups whose value
// overflows, as the RFC requires.
func Base45Decode(s string) ([]byte, error) {
	if len(s)%3 == 1 {
		return nil, ErrBase45
	}
	out := make([]byte, 0, len(s)/3*2+1)
	for i := 0; i < len(s); i += 3 {
		c, d := base45Index[s[i]], base45Index[s[i+1]]
		if c < 0 || d < 0 {
			return nil, ErrBase45
		}
		n := int(c) + int(d)*45
		if i+2 < len(s) {
			e := base45Index[s[i+2]]
			if e < 0 {
				return nil, ErrBase45
			}
			n += int(e) * 2025
			if n > 0xffff {
				return nil, ErrBase45
			}
			out = append(out, byte(n>>8), byte(n))
		} else {
			if n > 0xff {
				return nil, ErrBase45
			}
			out = append(out, byte(n))
		}
	}
	return out, nil
}
