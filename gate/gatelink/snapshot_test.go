package gatelink

import (
	"testing"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
)

// TestSnapshotChunksNotKept shows the link writes each chunk to the store
// when it arrives rather than keeping the chunks until the last one: the
// payloads are overwritten once handled (as paho may reuse them), and the
// whitelist still comes out whole. A chunk redelivered is written once; a
// newer manifest in the middle replaces the snapshot being received.
func TestSnapshotChunksNotKept(t *testing.T) {
	f := newFixture(t)
	sy := wire.GateTopic("v", "g1", wire.KindSync)
	var snap *snapshot
	send := func(payload []byte) {
		t.Helper()
		if err := f.link.handle(message{sy, payload}, &snap); err != nil {
			t.Fatal(err)
		}
		clear(payload)
	}
	offer := func(id, version uint64, first byte, n int) [][]byte {
		var chunks [][]byte
		var sums []string
		for c := range n {
			e := verify.TicketEntry{ID: id12(first + byte(c)), Serial: 1}
			msg := wire.Chunk(id, uint32(c), cache.AppendTicketRecord(nil, &e))
			chunks, sums = append(chunks, msg), append(sums, wire.ChunkSum(msg))
		}
		send(f.sign(t, wire.TypeManifest, &wire.Manifest{Venue: "v", Gate: "g1", ID: id, Event: "E", Version: version,
			TrustList: trustList(t, f.root, f.issuer, version), Tickets: n, Chunks: sums}))
		return chunks
	}

	abandoned := offer(1, 6, 100, 3)
	send(abandoned[0])
	chunks := offer(2, 7, 10, 4)
	again := append([]byte(nil), chunks[2]...)
	send(chunks[2])
	send(chunks[0])
	send(again)
	send(chunks[3])
	if st, _ := f.store.SyncState(); st.Version != 5 {
		t.Fatalf("version %d before the last chunk", st.Version)
	}
	send(chunks[1])
	if st, _ := f.store.SyncState(); st.Version != 7 {
		t.Fatalf("version %d after the last chunk, want 7", st.Version)
	}
	for c := range 4 {
		if e, _ := f.store.Entry(id12(10 + byte(c))); e == nil || e.Serial != 1 {
			t.Fatalf("ticket %d of the snapshot: %+v", c, e)
		}
	}
	if s, _ := f.store.Stats(); s.Tickets != 4 {
		t.Fatalf("%d tickets, want 4 (none of the abandoned snapshot)", s.Tickets)
	}
	if found, _ := f.store.DropStaging(); found {
		t.Fatal("a staging was left behind")
	}
}

func id12(b byte) verify.TicketID {
	var i verify.TicketID
	i[0], i[11] = b, 0x5a
	return i
}
