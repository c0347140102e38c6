package dashboard

import (
	"fmt"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/centretest"
	"github.com/gated-dev/gated/wire"
	"github.com/gated-dev/gated/wire/wiretest"
)

// BenchmarkRefresh measures the poller against books of 20,000 entries
// from 10 gates: "first" is a dashboard's first look (every entry), "idle"
// a later look with nothing new, "new100" a look at 100 new entries.
func BenchmarkRefresh(b *testing.B) {
	dir := b.TempDir()
	c := centretest.New(b, dir)
	ts, err := c.Issue(centre.IssueRequest{Event: "E", Count: 100})
	if err != nil {
		b.Fatal(err)
	}
	seq := map[string]uint64{}
	ingest := func(gate string, n int) {
		var seqs []uint64
		for range n {
			seq[gate]++
			seqs = append(seqs, seq[gate])
		}
		p := wiretest.Batch(b, wire.Batch{Gate: gate, Instance: gate + ".i"}, seqs, func(s uint64) map[string]any {
			return wiretest.Entry(gate, gate+".i", s, "deny", "already_used", ts[s%100].ID, time.Now().UTC())
		})
		if _, err := c.Ingest("arena", p); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 200 {
		ingest(fmt.Sprintf("g%d", i%10), 100)
	}
	b.Run("first", func(b *testing.B) {
		for b.Loop() {
			d, _ := New(c, Options{Token: "t"})
			if err := d.refresh(); err != nil {
				b.Fatal(err)
			}
		}
	})
	d, _ := New(c, Options{Token: "t"})
	d.refresh()
	b.Run("idle", func(b *testing.B) {
		for b.Loop() {
			if err := d.refresh(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new100", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			ingest("g1", 100)
			b.StartTimer()
			if err := d.refresh(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
