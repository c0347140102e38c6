package cache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// markUsedOwnUpdate is MarkUsed as it was before live uses joined the
// group commit: one transaction, so one commit and its fdatasyncs, per
// call. It is the baseline of BenchmarkLiveUseSyncs.
func (s *Store) markUsedOwnUpdate(id verify.TicketID, u verify.Use) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bUsed)
		if b.Get(id[:]) != nil {
			return nil
		}
		v, _ := json.Marshal(u)
		return b.Put(bytes.Clone(id[:]), v)
	})
}

// BenchmarkLiveUseSyncs counts the fdatasyncs one gate makes per
// admission made elsewhere in the venue, with live uses arriving at
// 200/s and applied one at a time (as the sync link does), alone or while
// this gate decides 20 scans/s. Modes: the old one transaction per call
// (baseline); MarkUsedBatch, which rides the group commit and waits for
// it (so one caller gets one call per LiveDelay through: see ns/op); and
// MarkUsedQueued, which rides it without waiting.
// Run it with a fixed count: -benchtime 200x.
func BenchmarkLiveUseSyncs(b *testing.B) {
	ffs := mountFaults(b)
	w := newWorld(b, 256)
	bundle := w.bundle(b, 1, "expo", w.root)
	n := 0
	for _, mode := range []string{"baseline-own-update", "batch-waits", "queued"} {
		for _, scans := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/scans=%v", mode, scans), func(b *testing.B) {
				n++
				s := openStore(b, filepath.Join(ffs.Dir, fmt.Sprint("b", n)), &Options{OpenFile: ffs.OpenFile})
				if _, err := s.Provision(bundle); err != nil {
					b.Fatal(err)
				}
				v := w.verifier()
				stop := make(chan struct{})
				var scanners sync.WaitGroup
				scanned := 0
				if scans {
					scanners.Add(1)
					go func() {
						defer scanners.Done()
						t := time.NewTicker(50 * time.Millisecond)
						defer t.Stop()
						for i := 0; ; i++ {
							select {
							case <-stop:
								return
							case <-t.C:
								w.scan(b, s, v, w.codes[i%len(w.codes)])
								scanned++
							}
						}
					}()
				}
				before := ffs.Syncs()
				tick := time.NewTicker(5 * time.Millisecond)
				defer tick.Stop()
				b.ResetTimer()
				// One caller, one live use at a time, as the sync link
				// applies the centre's messages.
				for i := range b.N {
					<-tick.C
					id, u := verify.TicketID{0xee, byte(i >> 8), byte(i)}, verify.Use{Seq: uint64(i + 1), At: w.now, Gate: "g2"}
					var err error
					switch mode {
					case "batch-waits":
						_, err = s.MarkUsedBatch([]verify.TicketID{id}, []verify.Use{u})
					case "queued":
						_, err = s.MarkUsedQueued([]verify.TicketID{id}, []verify.Use{u})
					default:
						err = s.markUsedOwnUpdate(id, u)
					}
					if err != nil {
						b.Error(err)
					}
				}
				s.MarkUsed(verify.TicketID{0xef}, verify.Use{Gate: "g2"}) // waits for the last commit
				b.StopTimer()
				close(stop)
				scanners.Wait()
				syncs := ffs.Syncs() - before
				b.ReportMetric(float64(syncs)/float64(b.N), "syncs/live-use")
				b.ReportMetric(float64(scanned), "scans")
			})
		}
	}
}
