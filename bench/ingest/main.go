// Command ingest measures how many gate entries a second gatesync ingests
// into PostgreSQL with one `gatesync serve` instance and with several
// sharing the entries through $share subscriptions on one mosquitto, and,
// as a baseline, one instance on the embedded bbolt store.
//
//	go run ./bench/ingest [-gates 8] [-backlog 10000] [-instances 1,2] [-runs 3] [-bbolt=false]
//
// Each run starts a fresh deployment (internal/scaleouttest): a
// throwaway PostgreSQL with fsync on, mosquitto with passwords and the
// deploy ACL, the instances, and gated run for each gate with its backlog
// written into its outbox beforehand. The clock runs from the moment every
// gate is connected until the books hold every entry. Everything shares
// this machine's CPUs: the figures compare instance counts on one box,
// not a cluster.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gated-dev/gated/internal/scaleouttest"
)

// tb lets the harness run outside a test: Fatalf ends the program,
// cleanups run at the end of each run.
type tb struct {
	dir      string
	cleanups []func()
}

func (*tb) Helper()                   {}
func (*tb) Fatalf(f string, a ...any) { log.Fatalf(f, a...) }
func (*tb) Skipf(f string, a ...any)  { log.Fatalf(f, a...) }
func (*tb) Logf(f string, a ...any)   { log.Printf(f, a...) }
func (t *tb) Cleanup(f func())        { t.cleanups = append(t.cleanups, f) }
func (t *tb) TempDir() string         { d, _ := os.MkdirTemp(t.dir, "t"); return d }
func (t *tb) done() {
	for _, f := range slices.Backward(t.cleanups) {
		f()
	}
	t.cleanups = nil
}

func main() {
	gates := flag.Int("gates", 8, "gates, each with its own backlog")
	backlog := flag.Int("backlog", 10_000, "entries in each gate's outbox")
	instances := flag.String("instances", "1,2", "instance counts to measure, comma-separated")
	runs := flag.Int("runs", 3, "runs of each instance count (the median is reported)")
	baseline := flag.Bool("bbolt", true, "measure one instance on the embedded bbolt store (central.db) first, as a baseline")
	flag.Parse()
	var counts []int
	for _, f := range strings.Split(*instances, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			log.Fatalf("-instances %q: want counts like 1,2", *instances)
		}
		counts = append(counts, n)
	}
	dir, err := os.MkdirTemp("", "bench-ingest")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bt := &tb{dir: dir}
	bin := scaleouttest.Build(bt)

	total := *gates * *backlog
	fmt.Printf("%d gates x %d entries = %d entries; PostgreSQL with fsync on; mosquitto; batches of up to 500, 4 in flight a gate\n",
		*gates, *backlog, total)
	type setup struct {
		name      string
		instances int
		bbolt     bool
	}
	var setups []setup
	if *baseline {
		setups = append(setups, setup{"1 instance, bbolt (central.db)", 1, true})
	}
	for _, n := range counts {
		setups = append(setups, setup{fmt.Sprintf("%d instance(s), PostgreSQL", n), n, false})
	}
	medians := make([]float64, len(setups))
	for i, s := range setups {
		var rates []float64
		for r := range *runs {
			t := &tb{dir: dir}
			d := scaleouttest.New(t, bin, scaleouttest.Options{Gates: *gates, Backlog: *backlog, Instances: s.instances,
				Durable: true, Bbolt: s.bbolt})
			d.StartInstances()
			d.StartGates()
			d.GatesConnected(30 * time.Second)
			took := d.WaitStored(total, 5*time.Minute)
			if !s.bbolt {
				var dup int
				if err := d.Query(`SELECT count(*) - count(DISTINCT id) FROM entries`, &dup); err != nil || dup != 0 {
					log.Fatalf("books: %d duplicates (%v)", dup, err)
				}
			}
			rate := float64(total) / took.Seconds()
			rates = append(rates, rate)
			fmt.Printf("  %s, run %d: %s, %.0f entries/s\n", s.name, r+1, took.Round(time.Millisecond), rate)
			t.done()
		}
		sort.Float64s(rates)
		medians[i] = rates[len(rates)/2]
	}
	for i, s := range setups {
		fmt.Printf("%-32s median %6.0f entries/s\n", s.name+":", medians[i])
	}
	bt.done()
}
