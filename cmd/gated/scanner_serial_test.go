package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serialProtocol is a scanner emulator for one wire protocol, written from
// the vendors' protocol descriptions independently of scanner/.
type serialProtocol struct {
	model string
	// frames returns the writes that carry one read of data; several for a
	// read that a packet protocol splits.
	frames    func(data string) [][]byte
	ack       []byte // what gated must answer to each frame; nil for none
	good, bad []byte // feedback after ADMIT and DENY; nil for models without
	noise     []byte // line noise the emulator sends before a read
	// corrupt, when set, returns a frame with a bad checksum, what gated
	// must answer to it, and the retransmission.
	corrupt func(data string) (bad, nak, again []byte)
	// deviceAck is what the scanner answers to each feedback command.
	deviceAck []byte
}

// ssiPacket is written out here rather than taken from scanner/ so the test
// checks the bytes against the protocol, not against itself.
func ssiPacketTest(opcode, source, status byte, data []byte) []byte {
	p := append([]byte{byte(4 + len(data)), opcode, source, status}, data...)
	var sum uint16
	for _, b := range p {
		sum += uint16(b)
	}
	c := ^sum + 1
	return append(p, byte(c>>8), byte(c))
}

func ssiDecode(data string) [][]byte {
	const chunk = 100 // a long read comes as several packets
	var out [][]byte
	for i := 0; i < len(data); i += chunk {
		end := min(i+chunk, len(data))
		status := byte(0)
		if end < len(data) {
			status = 0x02 // continuation
		}
		out = append(out, ssiPacketTest(0xF3, 0x00, status, append([]byte{0x1C}, data[i:end]...)))
	}
	return out
}

var serialProtocols = []serialProtocol{
	{
		model:  "honeywell-xenon-1950g",
		frames: func(d string) [][]byte { return [][]byte{[]byte("]Q1" + d + "\r")} },
		good:   unhex("1b 31 1b 61"),
		bad:    unhex("1b 37 1b 61"),
		noise:  []byte("\x00\xff\x13~#noise"),
	},
	{
		model:  "newland-fm430",
		frames: func(d string) [][]byte { return [][]byte{[]byte("]Q1" + d + "\r\n")} },
		noise:  []byte("\xfe\xfd\x07junk"),
	},
	{
		model:  "zebra-ds9308",
		frames: ssiDecode,
		ack:    unhex("04 d0 04 00 ff 28"),
		// BEEP 0x01 then LED_ON 0x01; BEEP 0x1a.
		good:      unhex("05 e6 04 00 01 ff 10  05 e7 04 00 01 ff 0f"),
		bad:       unhex("05 e6 04 00 1a fe f7"),
		noise:     []byte("\xff\xfe\x00\x13\x37\x00"),
		deviceAck: unhex("04 d0 00 00 ff 2c"),
		corrupt: func(d string) ([]byte, []byte, []byte) {
			p := ssiDecode(d)[0]
			bad := bytes.Clone(p)
			bad[len(bad)-1] ^= 0x55
			again := ssiPacketTest(0xF3, 0x00, 0x01 /* retransmit */, append([]byte{0x1C}, d...))
			return bad, unhex("05 d1 04 00 01 ff 25"), again
		},
	},
}

// TestSerialScannerEndToEnd runs the real gated binary against a scanner
// emulator on a real pty, per wire protocol: admissions, feedback bytes,
// split reads, noise, overlong reads, bad checksums, and a device that
// goes away and comes back under the same name.
func TestSerialScannerEndToEnd(t *testing.T) {
	for _, pr := range serialProtocols {
		t.Run(pr.model, func(t *testing.T) {
			tg := newTicketGate(t, 6, false)
			link := filepath.Join(t.TempDir(), "gated-scanner")
			p := openPTY(t)
			relink(t, p.slave, link)
			uri := fmt.Sprintf("serial:%s?model=%s", link, pr.model)
			d := startGated(t, tg, uri)
			d.waitLog(t, "scanner connected")
			var pending []byte

			send := func(p *pty, data string, split bool) {
				t.Helper()
				for _, f := range pr.frames(data) {
					if split {
						// Three writes with pauses, so gated's reads see pieces.
						for _, piece := range [][]byte{f[:3], f[3 : len(f)/2], f[len(f)/2:]} {
							p.write(t, piece)
							time.Sleep(30 * time.Millisecond)
						}
					} else {
						p.write(t, f)
					}
					if pr.ack != nil {
						p.expectBytes(t, "ack", pr.ack, &pending)
					}
				}
			}
			feedback := func(p *pty, admit bool) {
				t.Helper()
				want := pr.bad
				if admit {
					want = pr.good
				}
				if want == nil {
					return
				}
				p.expectBytes(t, fmt.Sprintf("feedback admit=%v", admit), want, &pending)
				if pr.deviceAck != nil {
					p.write(t, pr.deviceAck) // the scanner acknowledges each command
					p.write(t, pr.deviceAck)
				}
			}

			// A ticket is admitted, then denied as used, with the right feedback.
			send(p, tg.tickets[0], false)
			m := d.expect(t, "admit", "ok")
			if m["scanner"] != "serial:"+link {
				t.Errorf("decision names scanner %v, want serial:%s", m["scanner"], link)
			}
			feedback(p, true)
			send(p, tg.tickets[0], false)
			d.expect(t, "deny", "already_used")
			feedback(p, false)

			// Reads that arrive in pieces.
			send(p, tg.tickets[1], true)
			d.expect(t, "admit", "ok")
			feedback(p, true)

			// Line noise before a read does not spoil it.
			p.write(t, pr.noise)
			send(p, tg.tickets[2], false)
			d.expect(t, "admit", "ok")
			feedback(p, true)

			// An overlong read is cut and denied, not buffered without end.
			send(p, "]Q1"+strings.Repeat("A", 3000), false)
			d.expect(t, "deny", "malformed")
			feedback(p, false)

			if pr.corrupt != nil {
				bad, nak, again := pr.corrupt(tg.tickets[3])
				p.write(t, bad)
				p.expectBytes(t, "nak", nak, &pending)
				p.write(t, again)
				p.expectBytes(t, "ack of retransmission", pr.ack, &pending)
				d.expect(t, "admit", "ok")
				feedback(p, true)
			} else {
				// Noise that ends like a read is decided as what it is.
				p.write(t, append(bytes.Clone(pr.noise), pr.frames("")[0][3:]...))
				d.expect(t, "deny", "malformed")
				feedback(p, false)
			}

			// The device disappears and comes back at the same path.
			p.master.Close()
			d.waitLog(t, "scanner disconnected")
			p2 := openPTY(t)
			relink(t, p2.slave, link)
			d.waitLog(t, "scanner connected")
			pending = nil
			send(p2, tg.tickets[4], false)
			d.expect(t, "admit", "ok")
			feedback(p2, true)
		})
	}
}

// TestSerialScannersShareGate: two scanners of different protocols feed
// one gate; a ticket used at one is refused at the other, and each
// scanner hears only its own feedback.
func TestSerialScannersShareGate(t *testing.T) {
	hw, zb := serialProtocols[0], serialProtocols[2]
	tg := newTicketGate(t, 2, false)
	dir := t.TempDir()
	p1, p2 := openPTY(t), openPTY(t)
	l1, l2 := filepath.Join(dir, "lane1"), filepath.Join(dir, "lane2")
	relink(t, p1.slave, l1)
	relink(t, p2.slave, l2)
	d := startGated(t, tg, "serial:"+l1+"?model="+hw.model, "serial:"+l2+"?model="+zb.model)
	d.waitLog(t, "scanner connected")
	d.waitLog(t, "scanner connected")
	var pend1, pend2 []byte

	p1.write(t, hw.frames(tg.tickets[0])[0])
	if m := d.expect(t, "admit", "ok"); m["scanner"] != "serial:"+l1 {
		t.Errorf("decision from %v, want lane 1", m["scanner"])
	}
	p1.expectBytes(t, "lane 1 good", hw.good, &pend1)

	for _, f := range zb.frames(tg.tickets[0]) { // several packets, each ACKed
		p2.write(t, f)
		p2.expectBytes(t, "lane 2 ack", zb.ack, &pend2)
	}
	if m := d.expect(t, "deny", "already_used"); m["scanner"] != "serial:"+l2 || m["first_used_gate"] != "G1" {
		t.Errorf("decision %v, want lane 2 refusing a ticket used at G1", m)
	}
	p2.expectBytes(t, "lane 2 bad", zb.bad, &pend2)

	// Lane 1 heard nothing of lane 2's decision: its next bytes are its own.
	p1.write(t, hw.frames(tg.tickets[1])[0])
	d.expect(t, "admit", "ok")
	p1.expectBytes(t, "lane 1 good", hw.good, &pend1)
}
