// Command retention measures what journal retention saves: two gate
// stores take the same N decisions (default 1,000,000) spread over D days
// (default 10) of an injected clock, every one acked by the centre within
// the hour; one archives decisions older than a day every hour (as gated
// run does with journal_retention: 1d), the other keeps them all. It
// reports both gate.db sizes, before and after gated compact's rewrite, and
// the archive files' size.
//
//	go run ./bench/retention [-n 1000000] [-days 10]
//
// Decisions are recorded through cache.Store.Record with the verdict
// already decided (no signatures checked: the store's writes are what is
// measured), 7 in 10 a first admission of a ticket of its own (so uses
// pile up as they do at an event), the others already_used denials.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
)

func main() {
	n := flag.Int("n", 1_000_000, "decisions")
	days := flag.Int("days", 10, "days the decisions are spread over")
	keep := flag.Bool("keep", false, "keep the temp directory")
	flag.Parse()
	dir, err := os.MkdirTemp("", "bench-retention")
	check(err)
	if !*keep {
		defer os.RemoveAll(dir)
	}
	bundle := makeBundle()
	type gate struct {
		name  string
		dir   string
		keep  time.Duration // 0: forever
		store *cache.Store
		v     *verify.Verifier
	}
	gates := []*gate{{name: "journal_retention: 0 (keep)", dir: filepath.Join(dir, "keep")},
		{name: "journal_retention: 1d", dir: filepath.Join(dir, "oneday"), keep: 24 * time.Hour}}
	for _, g := range gates {
		// NoSync: the file's size is the same, the run an hour shorter.
		g.store, err = cache.Open(g.dir, &cache.Options{NoSync: true})
		check(err)
		_, err = g.store.Provision(bundle)
		check(err)
		st, err := g.store.State()
		check(err)
		g.v = verify.NewVerifier(verify.Policy{Event: st.Event}, st.Trust)
	}

	start := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
	hours := *days * 24
	perHour := *n / hours
	t0 := time.Now()
	var archived int
	for h := range hours {
		now := start.Add(time.Duration(h) * time.Hour)
		first := h * perHour
		count := perHour
		if h == hours-1 {
			count = *n - first
		}
		for _, g := range gates {
			decide(g.store, g.v, now, first, count)
			st, err := g.store.SyncState()
			check(err)
			_, err = g.store.Acknowledge(1, st.LastSeq) // the centre acks within the hour
			check(err)
			if g.keep > 0 {
				res, err := g.store.Archive(filepath.Join(g.dir, "archive"), now.Add(time.Hour).Add(-g.keep))
				check(err)
				archived += res.Records
			}
		}
	}
	log.Printf("%d decisions over %d days into each store in %s; %d archived", *n, *days, time.Since(t0).Round(time.Second), archived)
	for _, g := range gates {
		s, err := g.store.Stats()
		check(err)
		check(g.store.Close())
		size := fileSize(filepath.Join(g.dir, cache.FileName))
		res, err := cache.Compact(g.dir, 0)
		check(err)
		fmt.Printf("%-28s gate.db %6.1f MB (%5.0f bytes a decision), %6.1f MB after gated compact; journal %d records, used %d; archive %.1f MB\n",
			g.name, mb(size), float64(size)/float64(*n), mb(res.After), s.Journal, s.Used, mb(dirSize(filepath.Join(g.dir, "archive"))))
	}
}

// decide records count decisions at now, from 64 goroutines so they share
// commits as concurrent scanners do.
func decide(s *cache.Store, v *verify.Verifier, now time.Time, first, count int) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				sc := cache.Scan{At: now.Add(time.Duration(i-first) * time.Millisecond), Gate: "north-1", Scanner: "serial:/dev/gated-scanner-zebra"}
				tk := i
				reason := verify.ReasonOK
				if i%10 >= 7 {
					tk, reason = i-5, verify.ReasonAlreadyUsed
				}
				var id verify.TicketID
				binary.BigEndian.PutUint64(id[:], uint64(tk)*0x9E3779B97F4A7C15) // spread like random ids
				sc.Token = &verify.Token{Kind: verify.KindStatic, Credential: verify.Credential{Ticket: id, Serial: 1, Zone: "GA"}}
				sc.Pre = verify.Result{Reason: reason}
				if _, err := s.Record(context.Background(), v, sc); err != nil {
					log.Fatal(err)
				}
			}
		}()
	}
	for i := first; i < first+count; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}

func makeBundle() []byte {
	_, root, _ := ed25519.GenerateKey(rand.Reader)
	_, issuer, _ := ed25519.GenerateKey(rand.Reader)
	tl, err := verify.Seal(verify.TypeTrustList, &verify.TrustList{Version: 1, IssuedAt: time.Now().UTC(),
		Keys: []verify.IssuerKey{{KeyID: 1, PublicKey: issuer.Public().(ed25519.PublicKey)}}}, root)
	check(err)
	env, err := verify.Seal(verify.TypeBundle, &verify.Bundle{Version: 1, CreatedAt: time.Now().UTC(), Event: "expo", TrustList: tl,
		Tickets: []verify.TicketEntry{}, Revocations: []verify.Revocation{}}, root)
	check(err)
	b, err := json.Marshal(verify.BundleFile{RootKey: root.Public().(ed25519.PublicKey), Bundle: env})
	check(err)
	return b
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	check(err)
	return fi.Size()
}

func dirSize(dir string) int64 {
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

func mb(n int64) float64 { return float64(n) / (1 << 20) }

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
