package scanner

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"
)

func mustModel(t testing.TB, name string) *Model {
	t.Helper()
	m, err := LoadModels("")
	if err != nil {
		t.Fatal(err)
	}
	return m[name]
}

// feedAll feeds chunks at the given offsets in time and returns the reads
// and replies as text.
func feedAll(p protocol, chunks [][]byte, gaps []time.Duration) (string, string) {
	var reads strings.Builder
	var replies []byte
	now := time.Unix(0, 0)
	for i, c := range chunks {
		if i < len(gaps) {
			now = now.Add(gaps[i])
		}
		frames, reply := p.feed(c, now)
		replies = append(replies, reply...)
		for _, f := range frames {
			fmt.Fprintf(&reads, "%s|%v|%s\n", f.symbology, f.truncated, f.data)
		}
	}
	return reads.String(), hex.EncodeToString(replies)
}

func TestTerminated(t *testing.T) {
	md := mustModel(t, "honeywell-xenon-1950g")
	nl := mustModel(t, "newland-fm430")
	long := "]Q1" + strings.Repeat("A", 2000) + "\r"
	for _, tc := range []struct {
		name   string
		md     *Model
		chunks []string
		gaps   []time.Duration
		want   string
	}{
		{"whole", md, []string{"]Q1G1:ABC\r"}, nil, "]Q1|false|G1:ABC\n"},
		{"split", md, []string{"]Q", "1G1:A", "BC\r"}, nil, "]Q1|false|G1:ABC\n"},
		{"two in one read", md, []string{"]Q1A\r]C0B\r"}, nil, "]Q1|false|A\n]C0|false|B\n"},
		{"trailing space kept", md, []string{"]Q1AB \r"}, nil, "]Q1|false|AB \n"},
		{"noise before AIM", md, []string{"\x00\xffjunk]Q1A\r"}, nil, "]Q1|false|A\n"},
		{"no AIM", md, []string{"PLAIN\r"}, nil, "|false|PLAIN\n"},
		{"blank", md, []string{"\r\r\r"}, nil, ""},
		{"overlong", md, []string{long, "]Q1OK\r"}, nil, "]Q1|true|" + strings.Repeat("A", 1021) + "\n]Q1|false|OK\n"},
		{"stale partial dropped", md, []string{"GARB", "ZZZ\r"}, []time.Duration{0, time.Second}, "|false|ZZZ\n"},
		{"partial within gap kept", md, []string{"]Q1AB", "CD\r"}, []time.Duration{0, 100 * time.Millisecond}, "]Q1|false|ABCD\n"},
		{"CR LF", nl, []string{"]Q1A\r", "\n]Q1B\r\n"}, nil, "]Q1|false|A\n]Q1|false|B\n"},
		{"CR alone is data for CR LF", nl, []string{"]Q1A\rB\r\n"}, nil, "]Q1|false|A\rB\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var chunks [][]byte
			for _, c := range tc.chunks {
				chunks = append(chunks, []byte(c))
			}
			got, _ := feedAll(newProtocol(tc.md), chunks, tc.gaps)
			if got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestTerminatedFeedback(t *testing.T) {
	p := newProtocol(mustModel(t, "honeywell-xenon-1950g"))
	if got := hex.EncodeToString(p.feedback(true)); got != "1b311b61" {
		t.Errorf("good feedback %s", got)
	}
	if got := hex.EncodeToString(p.feedback(false)); got != "1b371b61" {
		t.Errorf("bad feedback %s", got)
	}
	if got := newProtocol(mustModel(t, "newland-fm430")).feedback(true); len(got) != 0 {
		t.Errorf("newland has no feedback, got % x", got)
	}
}

func unhexT(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func TestSSI(t *testing.T) {
	md := mustModel(t, "zebra-ds9308")
	dd := func(status byte, data string) []byte { // DECODE_DATA, QR
		p := append([]byte{byte(5 + len(data)), 0xF3, 0x00, status, 0x1C}, data...)
		c := -ssiSum(p)
		return append(p, byte(c>>8), byte(c))
	}
	ack := "04d00400ff28"
	nak := "05d1040001ff25"
	bad := dd(0, "HELLO")
	bad[len(bad)-1]++
	for _, tc := range []struct {
		name        string
		chunks      [][]byte
		want, reply string
	}{
		{"one packet", [][]byte{dd(0, "HELLO")}, "]Q1|false|HELLO\n", ack},
		{"byte by byte", split(dd(0, "HELLO"), 1), "]Q1|false|HELLO\n", ack},
		{"multi packet", [][]byte{dd(2, "HEL"), dd(0, "LO")}, "]Q1|false|HELLO\n", ack + ack},
		{"bad checksum", [][]byte{bad}, "", nak},
		{"retransmit after nak", [][]byte{bad, dd(1, "HELLO")}, "]Q1|false|HELLO\n", nak + ack},
		{"retransmit of a taken read", [][]byte{dd(0, "HELLO"), dd(1, "HELLO")}, "]Q1|false|HELLO\n", ack + ack},
		{"noise then packet", [][]byte{append([]byte{0xff, 0xfe, 0x00, 0x13}, dd(0, "HI")...)}, "]Q1|false|HI\n", ack},
		{"scanner ack ignored", [][]byte{unhexT("04 d0 00 00 ff 2c"), dd(0, "A")}, "]Q1|false|A\n", ack},
		{"overlong", [][]byte{dd(2, strings.Repeat("A", 250)), dd(2, strings.Repeat("A", 250)), dd(2, strings.Repeat("A", 250)),
			dd(2, strings.Repeat("A", 250)), dd(2, strings.Repeat("A", 250)), dd(0, "END")},
			"]Q1|true|" + strings.Repeat("A", 1024) + "\n", strings.Repeat(ack, 6)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reply := feedAll(newProtocol(md), tc.chunks, nil)
			if got != tc.want || reply != tc.reply {
				t.Errorf("reads %q replies %s\nwant %q replies %s", got, reply, tc.want, tc.reply)
			}
		})
	}
	p := newProtocol(md)
	if got := hex.EncodeToString(p.feedback(true)); got != "05e6040001ff10"+"05e7040001ff0f" {
		t.Errorf("good feedback %s", got)
	}
	if got := hex.EncodeToString(p.feedback(false)); got != "05e604001afef7" {
		t.Errorf("bad feedback %s", got)
	}
}

func ssiSum(p []byte) uint16 {
	var s uint16
	for _, b := range p {
		s += uint16(b)
	}
	return s
}

func split(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

// FuzzTerminated feeds arbitrary bytes, in arbitrary pieces, to the
// terminator framer: it must not panic, and no read may exceed the limit.
func FuzzTerminated(f *testing.F) {
	f.Add([]byte("]Q1G1:ABC\r"), uint8(3))
	f.Add([]byte("\x00\xff]Q1\r\r\n"), uint8(1))
	md := mustModel(f, "newland-fm430")
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		p := newProtocol(md)
		for _, c := range split(b, int(step)%17+1) {
			frames, _ := p.feed(c, time.Unix(0, 0))
			for _, fr := range frames {
				if len(fr.data) > md.Framing.MaxFrame+len(md.Framing.Terminator) || len(fr.data) == 0 {
					t.Fatalf("read of %d bytes", len(fr.data))
				}
			}
		}
	})
}

// FuzzSSI feeds arbitrary bytes to the SSI codec: no panic, bounded reads,
// and every reply it writes is a well-formed host packet.
func FuzzSSI(f *testing.F) {
	f.Add(unhexT("0a f3 00 00 1c 48 45 4c 4c 4f fe 56"), uint8(2))
	f.Add(unhexT("ff fe 00 13 04 d0 00 00 ff 2c"), uint8(1))
	md := mustModel(f, "zebra-ds9308")
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		p := newProtocol(md)
		for _, c := range split(b, int(step)%17+1) {
			frames, reply := p.feed(c, time.Unix(0, 0))
			for _, fr := range frames {
				if len(fr.data) > md.Framing.MaxFrame {
					t.Fatalf("read of %d bytes", len(fr.data))
				}
			}
			for len(reply) > 0 {
				n := int(reply[0]) + 2
				if n > len(reply) || ssiSum(reply[:n-2])+uint16(reply[n-2])<<8+uint16(reply[n-1]) != 0 || reply[2] != ssiFromHost {
					t.Fatalf("bad reply % x", reply)
				}
				reply = reply[n:]
			}
		}
	})
}

// FuzzHIDPOS feeds arbitrary reports to the HID POS decoder.
func FuzzHIDPOS(f *testing.F) {
	md := mustModel(f, "honeywell-xenon-1950g")
	r := make([]byte, 64)
	r[0], r[1] = 2, 5
	copy(r[2:], "HELLO")
	f.Add(r)
	f.Add([]byte{2, 200, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := &posDecoder{l: md.HIDPOS, max: md.Framing.MaxFrame}
		for _, c := range split(b, 64) {
			for _, fr := range d.report(c) {
				if len(fr.data) > md.Framing.MaxFrame {
					t.Fatalf("read of %d bytes", len(fr.data))
				}
			}
		}
	})
}

// FuzzKeyboard feeds arbitrary boot reports to the keyboard decoder.
func FuzzKeyboard(f *testing.F) {
	f.Add([]byte{2, 0, 0x04, 0, 0, 0, 0, 0, 0, 0, 0x28, 0, 0, 0, 0, 0}, false)
	f.Add([]byte{0x40, 0, 0x26, 0x26, 0x26, 0x26, 0x26, 0x26}, true)
	f.Fuzz(func(t *testing.T, b []byte, de bool) {
		l := Layouts["us"]
		if de {
			l = Layouts["de"]
		}
		d := &keyboardDecoder{layout: l, max: 64}
		for _, c := range split(b, 8) {
			for _, fr := range d.report(c) {
				if len(fr.data) > 64+3 || bytes.Contains(fr.data, []byte{0}) {
					t.Fatalf("read %q", fr.data)
				}
			}
		}
	})
}
