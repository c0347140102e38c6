package centre

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	bolt "go.etcd.io/bbolt"
)

// Every change to an event's whitelist is logged as a numbered delta in
// the same transaction as the change, so the log and the books never
// disagree; serve publishes the log and replays it to gates that missed
// some of it. A change too large for one message is logged as a marker
// that tells gates to fetch a snapshot.

var (
	bDeltas      = []byte("deltas")         // version(8) event -> wire.Delta JSON (unsigned)
	bEventVer    = []byte("event_versions") // event -> version(8) of its last change
	kPublishedTo = []byte("published_to")   // version(8): deltas up to here were published
)

func deltaKey(version uint64, event string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, version), event...)
}

// logDelta records a change of d.Event at version: it fills Prev from the
// event's last change and moves that to version.
func logDelta(tx *bolt.Tx, version uint64, d *wire.Delta) error {
	ev := tx.Bucket(bEventVer)
	if v := ev.Get([]byte(d.Event)); len(v) == 8 {
		d.Prev = binary.BigEndian.Uint64(v)
	}
	d.Version = version
	if len(d.Tickets)+len(d.Revocations) > wire.MaxDeltaItems {
		d.Tickets, d.Revocations, d.Snapshot = nil, nil, true
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bDeltas).Put(deltaKey(version, d.Event), b); err != nil {
		return err
	}
	return ev.Put([]byte(d.Event), binary.BigEndian.AppendUint64(nil, version))
}

func entryOf(t *Ticket) verify.TicketEntry {
	return verify.TicketEntry{ID: t.ID, Serial: t.Serial, Flags: t.Flags, NotBefore: t.NotBefore,
		NotAfter: t.NotAfter, Zone: t.Zone, DeviceKey: t.DeviceKey, Holder: t.Holder}
}

// OnChange sets a function called after every committed change that
// logged a delta (serve publishes them). It must not block.
func (c *Centre) OnChange(fn func()) { c.onChange.Store(&fn) }

func (c *Centre) changed() {
	if fn := c.onChange.Load(); fn != nil {
		(*fn)()
	}
}

// Deltas calls fn for every logged delta with a version above after, in
// order; with event set, only that event's.
func (c *Centre) Deltas(after uint64, event string, fn func(*wire.Delta) error) error {
	return c.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bDeltas).Cursor()
		for k, v := cur.Seek(binary.BigEndian.AppendUint64(nil, after+1)); k != nil; k, v = cur.Next() {
			if event != "" && !bytes.Equal(k[8:], []byte(event)) {
				continue
			}
			var d wire.Delta
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("delta log %x: %w", k, err)
			}
			if err := fn(&d); err != nil {
				return err
			}
		}
		return nil
	})
}

// EventVersion is the version of an event's last change (0: none logged).
func (c *Centre) EventVersion(event string) (uint64, error) {
	var v uint64
	err := c.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bEventVer).Get([]byte(event)); len(b) == 8 {
			v = binary.BigEndian.Uint64(b)
		}
		return nil
	})
	return v, err
}

// PublishedTo and SetPublishedTo keep serve's publishing cursor.
func (c *Centre) PublishedTo() (uint64, error) {
	var v uint64
	err := c.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bMeta).Get(kPublishedTo); len(b) == 8 {
			v = binary.BigEndian.Uint64(b)
		}
		return nil
	})
	return v, err
}

// SetPublishedTo moves serve's publishing cursor.
func (c *Centre) SetPublishedTo(v uint64) error {
	return c.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bMeta).Put(kPublishedTo, binary.BigEndian.AppendUint64(nil, v))
	})
}

func events(tx *bolt.Tx) []string {
	var out []string
	tx.Bucket(bEventVer).ForEach(func(k, _ []byte) error { out = append(out, string(k)); return nil })
	return out
}
