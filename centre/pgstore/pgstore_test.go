package pgstore_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/ingesttest"
	"github.com/gated-dev/gated/centre/pgstore"
	"github.com/gated-dev/gated/centre/pgstore/pgtest"
	"github.com/jackc/pgx/v5"
)

// TestConformance runs the IngestStore suite on a throwaway cluster, each
// test in a database of its own, with n separate pools as n "instances".
func TestConformance(t *testing.T) {
	cl := pgtest.Start(t, pgtest.Options{})
	var dbs atomic.Int32
	ingesttest.Run(t, func(t *testing.T, n int) []centre.IngestStore {
		url := newDatabase(t, cl, fmt.Sprintf("t%d", dbs.Add(1)))
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

func newDatabase(t *testing.T, cl *pgtest.Cluster, name string) string {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), cl.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return strings.Replace(cl.DSN, "/postgres?", "/"+name+"?", 1)
}

// TestMigrateTwice opens a database from several instances at once, and
// again: the schema is made once and a second open changes nothing.
func TestMigrateTwice(t *testing.T) {
	cl := pgtest.Start(t, pgtest.Options{})
	url := newDatabase(t, cl, "m")
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
	if n != 1 {
		t.Errorf("%d schema versions recorded; want 1", n)
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
