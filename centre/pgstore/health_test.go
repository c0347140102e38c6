package pgstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/ingesttest"
	"github.com/gated-dev/gated/centre/pgstore"
	"github.com/gated-dev/gated/internal/pgtest"
	"github.com/gated-dev/gated/verify"
)

// TestHealthWhenPostgresStops: with the books in PostgreSQL, a stopped
// server makes ingest fail and the centre unhealthy, with the reason.
func TestHealthWhenPostgresStops(t *testing.T) {
	cl := pgtest.Start(t, pgtest.Options{})
	s, err := pgstore.Open(context.Background(), cl.Database(t, "h"), pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	dir := t.TempDir()
	if err := centre.Init(dir, nil); err != nil {
		t.Fatal(err)
	}
	c, err := centre.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetIngestStore(s)
	var tk verify.TicketID
	if _, err := c.Ingest("v", ingesttest.Batch(t, "g1", "i1", tk, "deny", "revoked", 1)); err != nil || c.Health() != nil {
		t.Fatalf("ingest: %v, health: %v", err, c.Health())
	}
	cl.Stop()
	if _, err := c.Ingest("v", ingesttest.Batch(t, "g1", "i1", tk, "admit", "ok", 2)); err == nil { // the re-entry look-up fails first
		t.Fatal("ingest with PostgreSQL stopped succeeded")
	}
	if h := c.Health(); h == nil || !strings.Contains(h.Error(), "postgres") {
		t.Fatalf("health with PostgreSQL stopped: %v", h)
	}
}
