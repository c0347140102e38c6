package scanner

import (
	"bytes"
	"time"
)

// frame is one read cut out of a device's byte stream.
type frame struct {
	data      []byte
	symbology string
	truncated bool
}

// protocol is a device's wire protocol: it cuts reads out of bytes that
// arrive in any split and says what to send back. It is used by one
// goroutine at a time; feedback is pure and may be called from any.
type protocol interface {
	// feed takes the bytes that arrived at now and returns the complete
	// reads and the bytes the device must be sent (ACK/NAK), in order.
	feed(p []byte, now time.Time) (frames []frame, reply []byte)
	// feedback returns the bytes that tell the device how a read was decided.
	feedback(admit bool) []byte
	// reset forgets partial input, e.g. after the device was reopened.
	reset()
	// dropped returns and clears the count of bytes discarded as noise.
	dropped() int
}

// frameGap is how long a partial read may wait for its next byte. A
// scanner sends a read in one burst, so bytes left over after a pause are
// line noise and must not be glued to the front of the next read.
const frameGap = 500 * time.Millisecond

func newProtocol(md *Model) protocol {
	if md.Framing.Protocol == "ssi" {
		return &ssi{max: md.Framing.MaxFrame, aim: md.Framing.AIM, fb: md.Feedback}
	}
	return &terminated{term: md.Framing.Terminator, max: md.Framing.MaxFrame, aim: md.Framing.AIM,
		good: md.Feedback.Good, bad: md.Feedback.Bad}
}

// terminated frames reads that end with a terminator (CR, CR LF).
type terminated struct {
	term      []byte
	max       int
	aim       bool
	good, bad []byte

	buf, tail []byte
	over      bool // the current read passed max; the rest is dropped
	last      time.Time
	noise     int
}

func (t *terminated) reset() { t.buf, t.tail, t.over = t.buf[:0], t.tail[:0], false }

func (t *terminated) dropped() int { n := t.noise; t.noise = 0; return n }

func (t *terminated) feedback(admit bool) []byte {
	if admit {
		return t.good
	}
	return t.bad
}

func (t *terminated) feed(p []byte, now time.Time) ([]frame, []byte) {
	if len(p) == 0 {
		return nil, nil
	}
	if (len(t.buf) > 0 || t.over) && now.Sub(t.last) > frameGap {
		t.noise += len(t.buf)
		t.reset()
	}
	t.last = now
	var out []frame
	for _, c := range p {
		if len(t.tail) == len(t.term) {
			copy(t.tail, t.tail[1:])
			t.tail = t.tail[:len(t.tail)-1]
		}
		t.tail = append(t.tail, c)
		if !t.over {
			t.buf = append(t.buf, c)
		}
		if bytes.Equal(t.tail, t.term) {
			if t.over {
				out = t.emit(out, t.buf, true)
			} else {
				out = t.emit(out, t.buf[:len(t.buf)-len(t.term)], false)
			}
			continue
		}
		if !t.over && len(t.buf) > t.max+len(t.term) {
			t.over = true
			t.buf = t.buf[:t.max]
		}
	}
	return out, nil
}

func (t *terminated) emit(out []frame, b []byte, truncated bool) []frame {
	f := frame{truncated: truncated}
	// Only line ends and NULs: a Base45 ticket may end with a space.
	b = bytes.Trim(b, "\r\n\x00")
	if t.aim {
		var skipped int
		f.symbology, b, skipped = splitAIM(b)
		t.noise += skipped
	}
	if len(b) > 0 {
		f.data = bytes.Clone(b)
		out = append(out, f)
	}
	t.reset()
	return out
}

// splitAIM strips a leading AIM identifier (]Xm: ']', a symbology letter,
// a modifier). Bytes before the first identifier are noise and are
// skipped, so a burst of line noise does not spoil the read after it.
func splitAIM(b []byte) (aim string, rest []byte, skipped int) {
	for i := 0; i+3 <= len(b); i++ {
		if isAIM(b[i:]) {
			return string(b[i : i+3]), b[i+3:], i
		}
	}
	return "", b, 0
}

func isAIM(b []byte) bool {
	return len(b) >= 3 && b[0] == ']' && isAlpha(b[1]) && (isAlpha(b[2]) || b[2] >= '0' && b[2] <= '9')
}

func isAlpha(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }
