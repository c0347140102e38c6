package boltkv_test

import (
	"path/filepath"
	"testing"

	"github.com/gated-dev/gated/kv"
	"github.com/gated-dev/gated/kv/boltkv"
	"github.com/gated-dev/gated/kv/kvtest"
)

func open(t testing.TB) *boltkv.DB {
	t.Helper()
	db, err := boltkv.Open(filepath.Join(t.TempDir(), "kv.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.DB { return open(t) })
}

// BenchmarkCounterUpdate increments one counter from parallel goroutines,
// each increment a read-modify-write Update: the cost of contention on one
// key, to compare with kv/pgkv's.
//
//	go test -run '^$' -bench Counter ./kv/...
func BenchmarkCounterUpdate(b *testing.B) {
	db := open(b)
	kvtest.BenchmarkCounter(b, db)
}
