package gate

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/gate/scanner"
	"github.com/gated-dev/gated/verify"
)

type benchWorld struct {
	issuer ed25519.PrivateKey
	trust  *verify.TrustList
	codes  [][]byte
	now    time.Time
}

func newBenchWorld(t testing.TB, n int) (*benchWorld, []byte) {
	root := ed25519.NewKeyFromSeed([]byte(strings.Repeat("r", 32)))
	w := &benchWorld{issuer: ed25519.NewKeyFromSeed([]byte(strings.Repeat("i", 32))), now: time.Now().UTC()}
	w.trust = &verify.TrustList{Version: 1, Keys: []verify.IssuerKey{{KeyID: 1, PublicKey: w.issuer.Public().(ed25519.PublicKey)}}}
	var entries []verify.TicketEntry
	for i := 0; i < n; i++ {
		c := verify.Credential{KeyID: 1, Ticket: verify.TicketID{byte(i >> 16), byte(i >> 8), byte(i), 0xbb},
			Event: verify.TagOf("expo"), Serial: 1, NotAfter: w.now.Add(24 * time.Hour), Zone: "GA"}
		b, err := c.Sign(w.issuer)
		if err != nil {
			t.Fatal(err)
		}
		w.codes = append(w.codes, []byte(verify.StaticCode(b)))
		entries = append(entries, verify.TicketEntry{ID: c.Ticket, Serial: 1, NotAfter: c.NotAfter, Zone: "GA"})
	}
	tl, _ := verify.Seal(verify.TypeTrustList, w.trust, root)
	env, _ := verify.Seal(verify.TypeBundle, &verify.Bundle{Version: 1, CreatedAt: w.now, Event: "expo", TrustList: tl, Tickets: entries}, root)
	bundle, _ := json.Marshal(verify.BundleFile{RootKey: root.Public().(ed25519.PublicKey), Bundle: env})
	return w, bundle
}

func benchGate(b *testing.B, n int, noSync bool) (*Gate, *cache.Store, *benchWorld) {
	w, bundle := newBenchWorld(b, n)
	s, err := cache.Open(b.TempDir(), &cache.Options{NoSync: noSync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if _, err := s.Provision(bundle); err != nil {
		b.Fatal(err)
	}
	return New("g1", s, verify.NewVerifier(verify.Policy{Event: "expo"}, w.trust), nil), s, w
}

// BenchmarkScanNoSync is the whole scan path (parse, verify, look up, decide,
// journal, commit) with commits that skip fsync. Half the scans admit, half
// are second scans denied as already used; both write a journal record.
func BenchmarkScanNoSync(b *testing.B) {
	g, _, w := benchGate(b, 4096, true)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := g.Decide(ctx, scanner.Scan{Data: w.codes[i%len(w.codes)], Source: "bench", At: w.now})
		if e.Reason != verify.ReasonOK && e.Reason != verify.ReasonAlreadyUsed {
			b.Fatal(e.Reason, e.Detail)
		}
	}
}

// BenchmarkScanDurable is the scan path with fsync'd group commits under 1
// and 4 concurrent scanners; it reports per-scan latency percentiles.
func BenchmarkScanDurable(b *testing.B) {
	for _, scanners := range []int{1, 4} {
		b.Run(fmt.Sprintf("scanners=%d", scanners), func(b *testing.B) {
			g, _, w := benchGate(b, 4096, false)
			ctx := context.Background()
			lat := make([][]time.Duration, scanners)
			var wg sync.WaitGroup
			b.ResetTimer()
			for s := 0; s < scanners; s++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := s; i < b.N; i += scanners {
						t0 := time.Now()
						g.Decide(ctx, scanner.Scan{Data: w.codes[i%len(w.codes)], Source: "bench", At: w.now})
						lat[s] = append(lat[s], time.Since(t0))
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			if len(all) > 0 {
				b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}

// BenchmarkScanNoSyncParallel is the scan path without fsync with concurrent
// scanners, so decisions share commits as they do at a busy gate.
func BenchmarkScanNoSyncParallel(b *testing.B) {
	g, _, w := benchGate(b, 4096, true)
	ctx := context.Background()
	var n sync.Mutex
	i := 0
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n.Lock()
			code := w.codes[i%len(w.codes)]
			i++
			n.Unlock()
			g.Decide(ctx, scanner.Scan{Data: code, Source: "bench", At: w.now})
		}
	})
}

// BenchmarkFsync is the disk's own floor for ScanDurable: one 4 KiB page
// write plus fdatasync, with its latency percentiles, measured on the same
// file system in the same run.
func BenchmarkFsync(b *testing.B) {
	f, err := os.Create(b.TempDir() + "/fsync")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := f.WriteAt(page, int64(i%64)*4096); err != nil {
			b.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
