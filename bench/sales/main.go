// Command sales measures how many orders a second the sales API takes
// when many buyers press "buy" at once, and checks that none is oversold.
// Everything runs on loopback in one process: the real HTTP handler, the
// real store (bbolt with fsync on, and PostgreSQL with fsync on, compared
// in one run), sign-in through the API; only WeChat is stubbed, since
// holding stock does not call it.
//
//	go run ./bench/sales -buyers 2000 -stock 500 -stores bbolt,postgres
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gated-dev/gated/centre/sales"
	"github.com/gated-dev/gated/centre/wxpay"
	"github.com/gated-dev/gated/internal/pgtest"
	"github.com/gated-dev/gated/kv/pgkv"
)

type login struct{}

func (login) Code2Session(_ context.Context, code string) (wxpay.Session, error) {
	return wxpay.Session{OpenID: "o-" + code}, nil
}

// noPay and noIssue are never reached while holding stock.
type noPay struct{ sales.Payments }
type noIssue struct{ sales.Issuer }

func main() {
	buyers := flag.Int("buyers", 2000, "concurrent buyers, one order of one ticket each")
	stock := flag.Int("stock", 500, "tickets on sale")
	rounds := flag.Int("rounds", 3, "rounds of each store, each on fresh books")
	conns := flag.Int("conns", 256, "HTTP connections the buyers share")
	stores := flag.String("stores", "bbolt,postgres", "stores to measure, comma-separated; the first is the baseline the others are compared with. postgres starts a throwaway cluster (Debian's postgresql, fsync on) unless -pg names a database")
	shards := flag.Int("shards", 0, "stock shards of the tier (0: the store's default, 1 on bbolt and 8 on PostgreSQL)")
	pgDurable := flag.Bool("pg-durable", true, "the throwaway cluster keeps fsync and synchronous_commit on (false shows what the WAL flush costs)")
	pgConns := flag.Int("pg-conns", 0, "PostgreSQL connections of the store's pool (0: the sales store's default)")
	pgURL := flag.String("pg", "", "an existing PostgreSQL database (postgres://...) to measure instead of a throwaway cluster; the bench uses tables named bench_sales_N")
	flag.Parse()
	t := &tb{}
	defer t.done()
	if err := run(t, strings.Split(*stores, ","), *pgURL, *pgDurable, *pgConns, *shards, *buyers, *stock, *rounds, *conns); err != nil {
		t.done()
		fmt.Fprintln(os.Stderr, "bench/sales:", err)
		os.Exit(1)
	}
}

// tb lets pgtest run outside a test: Fatalf ends the program, cleanups
// run at the end.
type tb struct{ cleanups []func() }

func (*tb) Helper()                   {}
func (*tb) Fatalf(f string, a ...any) { log.Fatalf(f, a...) }
func (*tb) Skipf(f string, a ...any)  { log.Fatalf(f, a...) }
func (t *tb) Cleanup(f func())        { t.cleanups = append(t.cleanups, f) }
func (t *tb) done() {
	for _, f := range slices.Backward(t.cleanups) {
		f()
	}
	t.cleanups = nil
}

// opener makes fresh sales books for a round and says how to remove them.
type opener func(round int) (*sales.Store, func(), error)

func run(t *tb, stores []string, pgURL string, pgDurable bool, pgConns, shards int, buyers, stock, rounds, conns int) error {
	fmt.Printf("buyers=%d stock=%d conns=%d rounds=%d stores=%s\n", buyers, stock, conns, rounds, strings.Join(stores, ","))
	openers := map[string]opener{}
	for _, name := range stores {
		switch name {
		case "bbolt":
			openers[name] = func(int) (*sales.Store, func(), error) {
				dir, err := os.MkdirTemp("", "bench-sales")
				if err != nil {
					return nil, nil, err
				}
				st, err := sales.OpenStore(filepath.Join(dir, "sales.db"))
				return st, func() { st.Close(); os.RemoveAll(dir) }, err
			}
		case "postgres":
			url := pgURL
			if url == "" {
				url = pgtest.Start(t, pgtest.Options{Durable: pgDurable}).DSN
			}
			openers[name] = func(r int) (*sales.Store, func(), error) {
				db, err := pgkv.Open(context.Background(), url, pgkv.Options{Table: fmt.Sprintf("bench_sales_%d", r), MaxConns: int32(pgConns)})
				if err != nil {
					return nil, nil, err
				}
				return sales.NewStore(db), func() { db.Close() }, nil
			}
		default:
			return fmt.Errorf("-stores: %q is neither bbolt nor postgres", name)
		}
	}
	// Rounds alternate between the stores, so load from other work on the
	// machine falls on both alike.
	rates := map[string][]float64{}
	for r := 1; r <= rounds; r++ {
		for i, name := range stores {
			st, closeStore, err := openers[name](r*len(stores) + i + int(time.Now().Unix()%100000)*1000)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			res, err := round(st, shards, buyers, stock, conns)
			closeStore()
			if err != nil {
				return fmt.Errorf("%s round %d: %w", name, r, err)
			}
			fmt.Printf("%-8s round %d: %d held, %d sold out, %d other, oversold %d, %s, %.0f orders/s, p50 %s p99 %s\n", name, r, res.held, res.soldOut,
				res.other, res.oversold, res.elapsed.Round(time.Millisecond), res.rate, res.p50.Round(time.Millisecond), res.p99.Round(time.Millisecond))
			if res.oversold != 0 || res.other != 0 {
				return fmt.Errorf("%s round %d: oversold %d, other answers %d", name, r, res.oversold, res.other)
			}
			rates[name] = append(rates[name], res.rate)
		}
	}
	base := median(rates[stores[0]])
	for _, name := range stores {
		m := median(rates[name])
		fmt.Printf("median %-8s %6.0f orders/s (requests answered per second, held or sold out), %.2fx %s\n", name, m, m/base, stores[0])
	}
	return nil
}

func median(xs []float64) float64 {
	ys := slices.Clone(xs)
	sort.Float64s(ys)
	return ys[len(ys)/2]
}

type result struct {
	held, soldOut, other, oversold int
	elapsed, p50, p99              time.Duration
	rate                           float64
}

func round(st *sales.Store, shards, buyers, stock, conns int) (*result, error) {
	doors := time.Now().Add(30 * 24 * time.Hour)
	cfg := sales.Config{AppID: "wxbench", MchID: "1900000000", UserRate: -1, AddrRate: -1, StockShards: shards,
		Events: []sales.Event{{ID: "rush", Name: "Rush", DoorsOpen: doors, Ends: doors.Add(4 * time.Hour),
			Types: []sales.TicketType{{ID: "ga", Name: "General", Tiers: []sales.Tier{{ID: "std", Name: "Standard", Price: 5000, Quota: stock}}}}}}}
	s, err := sales.NewServer(cfg, st, noIssue{}, noPay{}, login{}, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	post := func(path, token string, body any) (int, []byte, error) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", base+path, bytes.NewReader(b))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		rb, err := io.ReadAll(resp.Body)
		return resp.StatusCode, rb, err
	}

	tokens := make([]string, buyers)
	for i := range tokens {
		st, b, err := post("/api/v1/login", "", map[string]string{"code": fmt.Sprint(i)})
		var lr sales.LoginResponse
		if err != nil || st != 200 || json.Unmarshal(b, &lr) != nil {
			return nil, fmt.Errorf("login: %d %s %v", st, b, err)
		}
		tokens[i] = lr.Token
	}

	var res result
	var mu sync.Mutex
	var wg sync.WaitGroup
	lat := make([]time.Duration, 0, buyers)
	var errs []error
	start := make(chan struct{})
	for i := range buyers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t0 := time.Now()
			code, b, err := post("/api/v1/orders", tokens[i], sales.OrderRequest{Event: "rush", Type: "ga", Tier: "std", Quantity: 1})
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, d)
			var e sales.ErrorBody
			switch {
			case err != nil:
				errs = append(errs, err)
			case code == 201:
				res.held++
			case code == 409 && json.Unmarshal(b, &e) == nil && e.Error == "sold_out":
				res.soldOut++
			default:
				res.other++
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	res.elapsed = time.Since(t0)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	res.p50, res.p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	res.rate = float64(buyers) / res.elapsed.Seconds()
	rem, err := st.Remaining("rush", "ga", "std")
	if err != nil {
		return nil, err
	}
	orders, _, err := st.Counts()
	if err != nil {
		return nil, err
	}
	if want := min(stock, buyers); orders[sales.OrderHeld] != res.held || res.held != want || rem != stock-want {
		res.oversold = orders[sales.OrderHeld] - stock
		return &res, fmt.Errorf("held %d in the store, %d answered, %d remaining: want %d held", orders[sales.OrderHeld], res.held, rem, want)
	}
	res.oversold = max(0, orders[sales.OrderHeld]-stock)
	return &res, nil
}
