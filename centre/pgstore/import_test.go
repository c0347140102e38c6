package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/ingesttest"
	"github.com/gated-dev/gated/centre/pgstore"
	"github.com/gated-dev/gated/internal/pgtest"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
)

var moveAt = time.Date(2026, 11, 23, 17, 0, 0, 123456000, time.UTC)

func tk(i byte) verify.TicketID { return verify.TicketID{0x5e, 1: i} }

// moveBatches are a bbolt store's history: two gates, a gap, a resent
// batch, a ticket admitted at both gates (a conflict) and twice at one.
func moveBatches(t *testing.T) []*wire.ParsedBatch {
	return []*wire.ParsedBatch{
		ingesttest.Batch(t, "g1", "i1", tk(1), "admit", "ok", 1),
		ingesttest.Batch(t, "g1", "i1", tk(2), "deny", "revoked", 2, 3),
		ingesttest.Batch(t, "g2", "i2", tk(1), "admit", "ok", 1, 2),
		ingesttest.Batch(t, "g1", "i1", tk(2), "deny", "revoked", 2, 3), // resent: duplicates
		ingesttest.Batch(t, "g1", "i1", tk(3), "admit", "ok", 6),        // leaves a gap at 4, 5
		ingesttest.Batch(t, "g2", "i2", tk(4), "admit", "ok", 3, 4),     // twice at one gate
	}
}

func ingestAll(t *testing.T, s centre.IngestStore, bs []*wire.ParsedBatch) (n, dup, conflicts int) {
	t.Helper()
	for i, b := range bs {
		res, err := s.Ingest(centre.IngestBatch{Venue: "v", Batch: b, At: moveAt.Add(time.Duration(i) * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		n, dup, conflicts = n+res.New, dup+res.Duplicate, conflicts+len(res.Conflicts)
	}
	return
}

// TestMoveImport moves a bbolt store's books into PostgreSQL: the same
// records with the same numbers, conflicts and gate states; resent batches
// are duplicates there; numbering goes on above the moved ones; a second
// import is refused and a failed one leaves nothing behind.
func TestMoveImport(t *testing.T) {
	cl := pgtest.Start(t, pgtest.Options{})
	ctx := context.Background()
	bolt, err := centre.OpenBoltIngest(filepath.Join(t.TempDir(), "books.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	bs := moveBatches(t)
	if n, dup, cf := ingestAll(t, bolt, bs); n != 8 || dup != 2 || cf != 3 {
		t.Fatalf("bbolt: %d new, %d duplicates, %d conflicts; want 8, 2, 3", n, dup, cf)
	}
	if err := bolt.UpdateGate("v", "g3", func(g *centre.GateState) { g.Online, g.Backlog = true, 7 }); err != nil {
		t.Fatal(err)
	}

	pg, err := pgstore.Open(ctx, cl.Database(t, "move"), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if err := pg.NoteReentry([]verify.TicketID{tk(9)}); err != nil { // shared by a primary already: no obstacle
		t.Fatal(err)
	}
	calls := 0
	st, err := pg.Import(ctx, func(put func(*centre.Books) error) error {
		return bolt.Export(3, func(b *centre.Books) error { calls++; return put(b) })
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := (pgstore.Imported{Entries: 8, Streams: 2, Uses: 3, Conflicts: 3, Gates: 3, UseLog: 3, LastN: 8}); st != want || calls != 8 {
		t.Errorf("imported %+v in %d chunks; want %+v in 8", st, calls, want)
	}
	sameBooks(t, bolt, pg)

	// The gates resend everything: all duplicates, nothing new.
	if n, dup, cf := ingestAll(t, pg, bs); n != 0 || dup != 10 || cf != 0 {
		t.Errorf("resent to PostgreSQL: %d new, %d duplicates, %d conflicts; want all 10 duplicates", n, dup, cf)
	}
	// Numbering goes on above the moved records, and g1 fills its gap.
	res, err := pg.Ingest(centre.IngestBatch{Venue: "v", Batch: ingesttest.Batch(t, "g1", "i1", tk(1), "admit", "ok", 4, 5), At: moveAt})
	if err != nil {
		t.Fatal(err)
	}
	if res.New != 2 || res.StoredTo != 6 || len(res.Conflicts) != 2 || res.Conflicts[0].N != 4 || res.Conflicts[0].First.EntryID != "i1-1" {
		t.Errorf("after the move: %+v; want 2 new, stored to 6, conflicts 4 and 5 with the moved first admission", res)
	}
	if rs, _ := pg.Entries(8, 10); len(rs) != 2 || rs[0].N != 9 || rs[1].N != 10 {
		t.Errorf("records after the move: %+v; want N 9 and 10", rs)
	}
	// The uses log goes on from its moved head: gates' cursors stay valid.
	res, err = pg.Ingest(centre.IngestBatch{Venue: "v", Batch: ingesttest.Batch(t, "g1", "i1", tk(7), "admit", "ok", 7), At: moveAt})
	if err != nil || len(res.Logged) != 1 || res.Logged[0].N != 4 {
		t.Errorf("a first admission after the move: %+v, %v; want logged as 4", res.Logged, err)
	}

	if _, err := pg.Import(ctx, func(put func(*centre.Books) error) error { return bolt.Export(0, put) }); !errors.Is(err, pgstore.ErrNotEmpty) {
		t.Errorf("second import: %v; want ErrNotEmpty", err)
	}

	// A failed import stores nothing: the move can be run again.
	pg2, err := pgstore.Open(ctx, cl.Database(t, "failed"), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg2.Close()
	boom := errors.New("disk on fire")
	if _, err := pg2.Import(ctx, func(put func(*centre.Books) error) error {
		calls = 0
		return bolt.Export(3, func(b *centre.Books) error {
			if calls++; calls == 5 {
				return boom
			}
			return put(b)
		})
	}); !errors.Is(err, boom) {
		t.Fatalf("failing export: %v", err)
	}
	if rs, _ := pg2.Entries(0, 100); len(rs) != 0 {
		t.Errorf("a failed import left %d records", len(rs))
	}
	if _, err := pg2.Import(ctx, func(put func(*centre.Books) error) error { return bolt.Export(0, put) }); err != nil {
		t.Fatalf("import after a failed one: %v", err)
	}
	sameBooks(t, bolt, pg2)
}

func sameBooks(t *testing.T, want, got centre.IngestStore) {
	t.Helper()
	wu, wh, err := want.Uses("E", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	gu, gh, err := got.Uses("E", 0, 1000)
	if err != nil || gh != wh || fmt.Sprint(gu) != fmt.Sprint(wu) {
		t.Errorf("uses log: head %d %v (%v); want head %d %v", gh, gu, err, wh, wu)
	}
	we, err := want.Entries(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	ge, err := got.Entries(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ge, we) {
		t.Errorf("records differ:\n got %+v\nwant %+v", ge, we)
	}
	wc, _ := want.Conflicts()
	gc, err := got.Conflicts()
	if err != nil || !reflect.DeepEqual(gc, wc) {
		t.Errorf("conflicts differ (%v):\n got %+v\nwant %+v", err, gc, wc)
	}
	wg, _ := want.Gates()
	gg, err := got.Gates()
	if err != nil || !reflect.DeepEqual(gg, wg) {
		t.Errorf("gates differ (%v):\n got %+v\nwant %+v", err, gg, wg)
	}
}
