// Package wiretest builds uplink batches for tests of what receives them
// (the centre's ingest, its books, the dashboard): entries as a gate
// writes them, parsed by wire.ParseBatch as the centre would.
package wiretest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
)

// Entry is the uplink record of decision seq of a gate's store instance
// about ticket tk of event "E"; reason is put as given. Callers add fields
// (such as "code") to the map.
func Entry(gate, instance string, seq uint64, verdict string, reason any, tk verify.TicketID, at time.Time) map[string]any {
	return map[string]any{"seq": seq, "id": fmt.Sprintf("%s-%d", instance, seq), "gate": gate, "event": "E",
		"verdict": verdict, "reason": reason, "ticket": tk.String(), "at": at}
}

// Batch is head (its gate, instance and any other field) with the entries
// entry(seq) for seqs, parsed as the centre parses what head.Gate sends.
// It fills V, First and Last.
func Batch(t testing.TB, head wire.Batch, seqs []uint64, entry func(seq uint64) map[string]any) *wire.ParsedBatch {
	t.Helper()
	head.V, head.First, head.Last = wire.Version, seqs[0], seqs[len(seqs)-1]
	for _, s := range seqs {
		e, err := json.Marshal(entry(s))
		if err != nil {
			t.Fatal(err)
		}
		head.Entries = append(head.Entries, e)
	}
	raw, err := json.Marshal(head)
	if err != nil {
		t.Fatal(err)
	}
	p, err := wire.ParseBatch(raw, head.Gate)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
