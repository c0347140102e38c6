package pgstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/ingesttest"
	"github.com/gated-dev/gated/centre/pgstore"
	"github.com/gated-dev/gated/centre/pgstore/pgtest"
	"github.com/gated-dev/gated/sync/wire"
	"github.com/gated-dev/gated/verify"
)

// BenchmarkIngest stores batches of 500 entries one after another, as one
// gatesync instance does, on PostgreSQL with fsync on and on bbolt.
//
//	go test -run '^$' -bench Ingest ./centre/pgstore
func BenchmarkIngest(b *testing.B) {
	batches := func(b *testing.B) []*wire.ParsedBatch {
		var out []*wire.ParsedBatch
		for i := range b.N {
			var seqs []uint64
			for q := range 500 {
				seqs = append(seqs, uint64(i*500+q+1))
			}
			out = append(out, ingesttest.Batch(b, "g1", "i1", verify.TicketID{}, "deny", "revoked", seqs...))
		}
		return out
	}
	run := func(b *testing.B, s centre.IngestStore) {
		bs := batches(b)
		b.ResetTimer()
		for _, bt := range bs {
			if _, err := s.Ingest(centre.IngestBatch{Venue: "v", Batch: bt}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "entries/s")
	}
	b.Run("postgres", func(b *testing.B) {
		cl := pgtest.Start(b, pgtest.Options{Durable: true})
		s, err := pgstore.Open(context.Background(), cl.DSN, pgstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
	b.Run("bbolt", func(b *testing.B) {
		s, err := centre.OpenBoltIngest(filepath.Join(b.TempDir(), fmt.Sprint("i.db")))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
}
