package cache

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"time"

	"github.com/gated-dev/gated/verify"
)

// A whitelist entry on disk: serial(2) flags(1) not-before(8) not-after(8)
// zone-len(1) zone holder-len(1) holder [device key(32)]. Binary rather than
// JSON because a million of them must fit a small gate's disk and memory.
func encodeEntry(e *verify.TicketEntry) []byte {
	zone, holder := clip(e.Zone), clip(e.Holder)
	b := make([]byte, 0, 21+len(e.Zone)+len(e.Holder)+len(e.DeviceKey))
	b = binary.BigEndian.AppendUint16(b, e.Serial)
	b = append(b, e.Flags)
	b = binary.BigEndian.AppendUint64(b, unixOrZero(e.NotBefore))
	b = binary.BigEndian.AppendUint64(b, unixOrZero(e.NotAfter))
	b = append(b, byte(len(zone)))
	b = append(b, zone...)
	b = append(b, byte(len(holder)))
	b = append(b, holder...)
	return append(b, e.DeviceKey...)
}

func unixOrZero(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.Unix())
}

func timeOrZero(u uint64) time.Time {
	if u == 0 {
		return time.Time{}
	}
	return time.Unix(int64(u), 0).UTC()
}

var errEntry = errors.New("corrupt whitelist entry")

func decodeEntry(id verify.TicketID, b []byte) (*verify.TicketEntry, error) {
	if len(b) < 20 {
		return nil, errEntry
	}
	e := &verify.TicketEntry{ID: id, Serial: binary.BigEndian.Uint16(b), Flags: b[2],
		NotBefore: timeOrZero(binary.BigEndian.Uint64(b[3:])), NotAfter: timeOrZero(binary.BigEndian.Uint64(b[11:]))}
	p := 19
	zl := int(b[p])
	p++
	if len(b) < p+zl+1 {
		return nil, errEntry
	}
	e.Zone = string(b[p : p+zl])
	p += zl
	hl := int(b[p])
	p++
	if len(b) < p+hl {
		return nil, errEntry
	}
	e.Holder = string(b[p : p+hl])
	p += hl
	switch len(b) - p {
	case 0:
	case ed25519.PublicKeySize:
		e.DeviceKey = ed25519.PublicKey(append([]byte(nil), b[p:]...))
	default:
		return nil, errEntry
	}
	return e, nil
}

func clip(s string) string {
	if len(s) > 255 {
		return s[:255]
	}
	return s
}
