package verify

import (
	"bytes"
	"testing"
)

// The examples of RFC 9285 section 4.
func TestBase45RFC9285(t *testing.T) {
	for _, tc := range []struct{ raw, enc string }{
		{"AB", "BB8"},
		{"Hello!!", "%69 VD92EX0"},
		{"base-45", "UJCLQE7W581"},
		{"ietf!", "QED8WEX0"},
		{"", ""},
	} {
		if got := Base45Encode([]byte(tc.raw)); got != tc.enc {
			t.Errorf("encode %q = %q, want %q", tc.raw, got, tc.enc)
		}
		got, err := Base45Decode(tc.enc)
		if err != nil || string(got) != tc.raw {
			t.Errorf("decode %q = %q, %v; want %q", tc.enc, got, err, tc.raw)
		}
	}
}

func TestBase45Invalid(t *testing.T) {
	for _, s := range []string{
		"A",       // a lone character encodes nothing
		"GGW",     // 65536 overflows two bytes
		"ZZ",      // 1259 overflows one byte
		"ab8",     // lower case is not in the alphabet
		"BB8\x00", // trailing junk
		"B#8",
	} {
		if b, err := Base45Decode(s); err == nil {
			t.Errorf("decode %q = %x, want an error", s, b)
		}
	}
}

func FuzzBase45(f *testing.F) {
	f.Add([]byte("Hello!!"))
	f.Add([]byte{0xff, 0xff, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Base45Decode(Base45Encode(b))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("round trip of %x: %x, %v", b, got, err)
		}
		if d, err := Base45Decode(string(b)); err == nil {
			if Base45Encode(d) != string(b) {
				t.Fatalf("decode(%q) re-encodes differently", b)
			}
		}
	})
}
