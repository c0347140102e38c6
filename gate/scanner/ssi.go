package scanner

import (
	"bytes"
	"fmt"
	"time"
)

// Zebra Simple Serial Interface (SSI). A packet is
//
//	length | opcode | source | status | data... | checksum (2 bytes, big endian)
//
// where length counts every byte but the checksum, and the checksum is the
// two's complement of the 16-bit sum of those bytes. The scanner sends
// DECODE_DATA and waits for CMD_ACK; a bad packet is answered with CMD_NAK
// RESEND and comes again with the retransmit bit set.
const (
	ssiCmdAck     = 0xD0
	ssiCmdNak     = 0xD1
	ssiDecodeData = 0xF3
	ssiBeep       = 0xE6
	ssiLEDOn      = 0xE7
	ssiLEDOff     = 0xE8

	ssiFromHost    = 0x04
	ssiFromDecoder = 0x00

	ssiRetransmit   = 0x01
	ssiContinuation = 0x02 // more packets of this read follow

	ssiNakResend = 0x01
)

// ssiPacket builds a host packet.
func ssiPacket(opcode byte, data ...byte) []byte {
	p := append([]byte{byte(4 + len(data)), opcode, ssiFromHost, 0}, data...)
	c := ssiChecksum(p)
	return append(p, byte(c>>8), byte(c))
}

func ssiChecksum(p []byte) uint16 {
	var sum uint16
	for _, b := range p {
		sum += uint16(b)
	}
	return -sum
}

// ssiKnownOpcode is what a packet from the scanner may carry; used to tell
// a packet's start from noise.
var ssiKnownOpcode = map[byte]bool{ssiCmdAck: true, ssiCmdNak: true, ssiDecodeData: true,
	0xF6 /* REPLY_REVISION */ : true, 0xC6 /* PARAM_SEND */ : true, 0xF4 /* EVENT */ : true}

// ssiSymbology names the SSI barcode types gated meets by their AIM ids.
var ssiSymbology = map[byte]string{0x1C: "]Q1", 0x1B: "]d1", 0x03: "]C0", 0x01: "]A0", 0x0B: "]E0", 0x0F: "]I0", 0x11: "]L0"}

type ssi struct {
	max int
	aim bool
	fb  FeedbackCmds

	buf   []byte
	last  time.Time
	read  []byte // data of a multi-packet read so far
	sym   string
	over  bool
	prev  []byte // the last DECODE_DATA packet accepted, to drop retransmits of it
	noise int
}

func (s *ssi) reset() { s.buf, s.read, s.over, s.sym = s.buf[:0], s.read[:0], false, "" }

func (s *ssi) dropped() int { n := s.noise; s.noise = 0; return n }

func (s *ssi) feedback(admit bool) []byte {
	var out []byte
	if admit {
		if s.fb.SSIGoodBeep != 0 {
			out = append(out, ssiPacket(ssiBeep, byte(s.fb.SSIGoodBeep))...)
		}
		if s.fb.SSIGoodLED != 0 {
			out = append(out, ssiPacket(ssiLEDOn, byte(s.fb.SSIGoodLED))...)
		}
	} else if s.fb.SSIBadBeep != 0 {
		out = append(out, ssiPacket(ssiBeep, byte(s.fb.SSIBadBeep))...)
	}
	return out
}

// packetAt reports whether a complete packet with a good checksum starts
// at b[0] and its length; complete is false when more bytes are needed.
func ssiPacketAt(b []byte) (n int, complete, ok bool) {
	if len(b) == 0 {
		return 0, false, false
	}
	l := int(b[0])
	if l < 4 {
		return 0, true, false
	}
	if len(b) > 1 && !ssiKnownOpcode[b[1]] || len(b) > 2 && b[2] != ssiFromDecoder {
		return 0, true, false
	}
	if len(b) < l+2 {
		return l + 2, false, false
	}
	c := ssiChecksum(b[:l])
	return l + 2, true, b[l] == byte(c>>8) && b[l+1] == byte(c)
}

func (s *ssi) feed(p []byte, now time.Time) ([]frame, []byte) {
	if len(p) == 0 {
		return nil, nil
	}
	if len(s.buf) > 0 && now.Sub(s.last) > frameGap {
		s.noise += len(s.buf)
		s.buf = s.buf[:0]
	}
	s.last = now
	s.buf = append(s.buf, p...)
	var out []frame
	var reply []byte
	for len(s.buf) > 0 {
		n, complete, ok := ssiPacketAt(s.buf)
		if ok {
			pkt := s.buf[:n]
			var f *frame
			f, reply = s.packet(pkt, reply)
			if f != nil {
				out = append(out, *f)
			}
			s.buf = s.buf[n:]
			continue
		}
		// Not a good packet at the front: skip to a good one further on,
		// or to a plausible start that is still arriving.
		if k := s.resync(); k > 0 {
			s.noise += k
			s.buf = s.buf[k:]
			continue
		}
		if !complete {
			break // wait for the rest
		}
		if n > 0 {
			// A whole packet whose checksum failed: ask for it again.
			reply = append(reply, ssiPacket(ssiCmdNak, ssiNakResend)...)
			s.noise += n
			s.buf = s.buf[n:]
			continue
		}
		s.noise++
		s.buf = s.buf[1:]
	}
	if len(s.buf) == 0 {
		s.buf = nil // do not pin a large array between reads
	}
	return out, reply
}

// resync returns the offset of the first good packet after the front, or
// 0. A bad packet whose start looked plausible is left to NAK and the
// scanner's retransmission rather than guessed at.
func (s *ssi) resync() int {
	for k := 1; k < len(s.buf); k++ {
		if _, _, ok := ssiPacketAt(s.buf[k:]); ok {
			return k
		}
	}
	return 0
}

// packet handles one good packet from the scanner.
func (s *ssi) packet(pkt []byte, reply []byte) (*frame, []byte) {
	op, status, data := pkt[1], pkt[3], pkt[4:len(pkt)-2]
	switch op {
	case ssiCmdAck, ssiCmdNak:
		return nil, reply // the scanner's answer to our beep or LED
	case ssiDecodeData:
	default:
		return nil, append(reply, ssiPacket(ssiCmdAck)...)
	}
	reply = append(reply, ssiPacket(ssiCmdAck)...)
	if status&ssiRetransmit != 0 && s.prev != nil && sameSSI(pkt, s.prev) {
		return nil, reply // our ACK was lost; the read was already taken
	}
	s.prev = append(s.prev[:0], pkt...)
	if len(data) == 0 {
		return nil, reply
	}
	if len(s.read) == 0 && !s.over {
		s.sym = ssiSymbology[data[0]]
		if s.sym == "" {
			s.sym = fmt.Sprintf("ssi:%02x", data[0])
		}
	}
	data = data[1:]
	if !s.over {
		s.read = append(s.read, data...)
		if len(s.read) > s.max {
			s.read, s.over = s.read[:s.max], true
		}
	}
	if status&ssiContinuation != 0 {
		return nil, reply
	}
	f := &frame{symbology: s.sym, truncated: s.over}
	b := s.read
	if s.aim && isAIM(b) {
		f.symbology, b = string(b[:3]), b[3:]
	}
	f.data = bytes.Clone(b)
	s.read, s.over, s.sym = s.read[:0], false, ""
	if len(f.data) == 0 {
		return nil, reply
	}
	return f, reply
}

// sameSSI compares two packets ignoring the status byte's retransmit bit
// and the checksum, which changes with it.
func sameSSI(a, b []byte) bool {
	if len(a) != len(b) || len(a) < 6 {
		return false
	}
	return bytes.Equal(a[:3], b[:3]) && a[3]&^ssiRetransmit == b[3]&^ssiRetransmit && bytes.Equal(a[4:len(a)-2], b[4:len(b)-2])
}
