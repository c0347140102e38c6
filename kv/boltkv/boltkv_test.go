package boltkv_test

import (
	"path/filepath"
	"strconv"
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
	runs := 0
	for _, par := range []int{1, 8} {
		b.Run("par="+strconv.Itoa(par), func(b *testing.B) {
			runs++
			key := []byte("counter" + strconv.Itoa(runs)) // a new counter each run
			b.SetParallelism(par)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					err := db.Update(b.Context(), func(tx kv.Tx) error {
						v, err := tx.Get("bench", key)
						if err != nil {
							return err
						}
						n := 0
						if v != nil {
							n, _ = strconv.Atoi(string(v))
						}
						return tx.Put("bench", key, []byte(strconv.Itoa(n+1)))
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			var got []byte
			db.View(b.Context(), func(tx kv.Tx) error {
				v, err := tx.Get("bench", key)
				got = append(got[:0], v...)
				return err
			})
			if string(got) != strconv.Itoa(b.N) {
				b.Errorf("counter = %q after %d increments", got, b.N)
			}
		})
	}
}
