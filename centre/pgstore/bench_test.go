package pgstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/ingesttest"
	"github.com/gated-dev/gated/centre/pgstore"
	"github.com/gated-dev/gated/internal/pgtest"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	"github.com/jackc/pgx/v5"
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
		s, err := centre.OpenBoltIngest(filepath.Join(b.TempDir(), "i.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		run(b, s)
	})
}

// BenchmarkImport moves books of 100,000 entries (20 gates, batches of
// 500) from bbolt into an empty PostgreSQL database with fsync on, in
// chunks of 5,000 as gatesync move-books does.
//
//	go test -run '^$' -bench Import -benchtime 3x ./centre/pgstore
func BenchmarkImport(b *testing.B) {
	const gates, batches, size = 20, 10, 500
	bolt, err := centre.OpenBoltIngest(filepath.Join(b.TempDir(), "books.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer bolt.Close()
	for g := range gates {
		for i := range batches {
			var seqs []uint64
			for q := range size {
				seqs = append(seqs, uint64(i*size+q+1))
			}
			bt := ingesttest.Batch(b, fmt.Sprint("g", g), fmt.Sprint("i", g), verify.TicketID{}, "deny", "revoked", seqs...)
			if _, err := bolt.Ingest(centre.IngestBatch{Venue: "v", Batch: bt}); err != nil {
				b.Fatal(err)
			}
		}
	}
	cl := pgtest.Start(b, pgtest.Options{Durable: true})
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		s, err := pgstore.Open(context.Background(), newBenchDatabase(b, cl, fmt.Sprint("imp", i)), pgstore.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		st, err := s.Import(context.Background(), func(put func(*centre.Books) error) error { return bolt.Export(5000, put) })
		if err != nil || st.Entries != gates*batches*size {
			b.Fatalf("import: %+v, %v", st, err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*gates*batches*size)/b.Elapsed().Seconds(), "entries/s")
}

func newBenchDatabase(b *testing.B, cl *pgtest.Cluster, name string) string {
	conn, err := pgx.Connect(context.Background(), cl.DSN)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "CREATE DATABASE "+name); err != nil {
		b.Fatal(err)
	}
	return strings.Replace(cl.DSN, "/postgres?", "/"+name+"?", 1)
}
