package pgstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/ingesttest"
	"github.com/gated-dev/gated/centre/pgstore"
	"github.com/gated-dev/gated/internal/pgtest"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	"github.com/jackc/pgx/v5"
)

// TestConformance runs the IngestStore suite on a throwaway cluster, each
// test in a database of its own, with n separate pools as n "instances".
func TestConformance(t *testing.T) {
	cl := pgtest.Start(t, pgtest.Options{})
	var dbs atomic.Int32
	ingesttest.Run(t, func(t *testing.T, n int) []centre.IngestStore {
		url := cl.Database(t, fmt.Sprintf("t%d", dbs.Add(1)))
		hs := make([]centre.IngestStore, n)
		for i := range hs {
			s, err := pgstore.Open(context.Background(), url, pgstore.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			hs[i] = s
		}
		return hs
	})
}

// TestMigrateTwice opens a database from several instances at once, and
// again: the schema is made once and a second open changes nothing.
func TestMigrateTwice(t *testing.T) {
	cl := pgtest.Start(t, pgtest.Options{})
	url := cl.Database(t, "m")
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			s, err := pgstore.Open(context.Background(), url, pgstore.Options{})
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent open: %v", err)
		}
	}
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	conn.QueryRow(context.Background(), "SELECT count(*) FROM gatesync_schema").Scan(&n)
	if n != 3 {
		t.Errorf("%d schema versions recorded; want 3", n)
	}
	// A database from a newer gatesync is refused with a clear error.
	conn.Exec(context.Background(), "INSERT INTO gatesync_schema (version) VALUES (99)")
	if _, err := pgstore.Open(context.Background(), url, pgstore.Options{}); err == nil || !strings.Contains(err.Error(), "upgrade gatesync") {
		t.Errorf("newer schema: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := pgstore.Open(context.Background(), "postgres://nobody@127.0.0.1:1/x?connect_timeout=2", pgstore.Options{}); err == nil {
		t.Error("no server: opened")
	}
	if _, err := pgstore.Open(context.Background(), "mysql://x", pgstore.Options{}); err == nil {
		t.Error("bad URL: opened")
	}
}

// TestReentryShared: an instance whose central.db holds no tickets (the
// second instance, with only the root key) decides re-entry conflicts as
// the primary does, from the re-entry tickets the primary shares.
func TestReentryShared(t *testing.T) {
	cl := pgtest.Start(t, pgtest.Options{})
	url := cl.Database(t, "r")
	var rootDir string
	open := func() *centre.Centre {
		dir := t.TempDir()
		if err := centre.Init(dir, nil); err != nil {
			t.Fatal(err)
		}
		if rootDir == "" {
			rootDir = dir
		} else { // beside the primary: its root key
			for _, f := range []string{centre.RootKeyFile, centre.RootPubFile} {
				b, err := os.ReadFile(filepath.Join(rootDir, f))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		c, err := centre.Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := pgstore.Open(context.Background(), url, pgstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		c.SetIngestStore(s)
		t.Cleanup(func() { c.Close(); s.Close() })
		return c
	}
	primary, second := open(), open()
	if err := primary.ShareTrust(); err != nil {
		t.Fatal(err)
	}
	codes := map[verify.TicketID]string{}
	issue := func() verify.TicketID {
		ts, err := primary.Issue(centre.IssueRequest{Event: "E", Count: 1, Reentry: true})
		if err != nil {
			t.Fatal(err)
		}
		codes[ts[0].ID] = ts[0].Code()
		return ts[0].ID
	}
	atStart := issue()
	if n, err := primary.ShareReentry(); err != nil || n != 1 {
		t.Fatalf("share on start: %d, %v", n, err)
	}
	byDelta := issue()
	if err := primary.Deltas(0, "", func(d *wire.Delta) error { return primary.ShareReentryDelta(d) }); err != nil {
		t.Fatal(err)
	}
	unshared := issue()
	for i, tc := range []struct {
		tk        verify.TicketID
		conflicts int
	}{{atStart, 0}, {byDelta, 0}, {unshared, 1}} {
		for g, gate := range []string{"g1", "g2"} {
			b := ingesttest.Batch(t, gate, "i"+gate, tc.tk, "admit", "ok", uint64(i+1))
			b.Parsed[0].Code = codes[tc.tk] // the second instance checks it under the primary's shared trust list
			res, err := second.Ingest("v", b)
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.conflicts * g; len(res.Conflicts) != want {
				t.Errorf("ticket %d at %s: %d conflicts; want %d (alerts %+v)", i, gate, len(res.Conflicts), want, res.Alerts)
			}
		}
	}
}
