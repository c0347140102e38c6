package sales_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre/sales"
)

// TestStockShards splits a tier's stock over four shards on bbolt (the
// PostgreSQL run of the suite uses its default of eight everywhere):
// orders larger than one shard are covered from several, buyers at once
// sell exactly the quota, the last tickets are offered as "only N left",
// an expired hold puts its stock back, and a new quota and shard count at
// restart keep the remaining stock.
func TestStockShards(t *testing.T) {
	h := newHarness(t, func(c *sales.Config) { c.StockShards, c.UserRate, c.AddrRate = 4, -1, -1 })
	early := sales.OrderRequest{Event: "gala", Type: "std", Tier: "early"}
	if n := h.remaining("gala", "std", "early"); n != 10 {
		t.Fatalf("remaining over 4 shards: %d; want the quota, 10", n)
	}
	// Four at once: more than any one shard (10 over 4 is 3,3,2,2).
	big := early
	big.Quantity = 4
	held := h.order(h.signIn("o-big"), big)
	if n := h.remaining("gala", "std", "early"); n != 6 {
		t.Fatalf("remaining after an order of 4: %d; want 6", n)
	}

	// 30 buyers of one ticket each for the 6 left, ten minutes later.
	h.clock.Add(10 * time.Minute)
	var wg sync.WaitGroup
	var mu sync.Mutex
	answers := map[string]int{}
	tokens := make([]string, 30)
	for i := range tokens {
		tokens[i] = h.signIn(fmt.Sprintf("o-rush-%02d", i))
	}
	one := early
	one.Quantity = 1
	for i := range tokens {
		wg.Go(func() {
			a := h.do("POST", "/api/v1/orders", tokens[i], one)
			mu.Lock()
			defer mu.Unlock()
			if a.status == 201 {
				answers["held"]++
			} else {
				answers[a.errCode()]++
			}
		})
	}
	wg.Wait()
	if answers["held"] != 6 || answers["sold_out"]+answers["not_enough_stock"] != 24 {
		t.Fatalf("30 buyers for 6 tickets: %v; want 6 held, 24 refused", answers)
	}
	if n := h.remaining("gala", "std", "early"); n != 0 {
		t.Fatalf("remaining after the rush: %d", n)
	}

	// The big hold expires: its 4 go back, to one shard. A buyer of 3 is
	// served across shards even if its own is empty, and the next buyer
	// of 2 hears that only 1 is left.
	h.clock.Add(6 * time.Minute)
	if err := h.s.SweepHolds(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.st.Order(held.No); got.State != sales.OrderExpired {
		t.Fatalf("the big order after its hold: %s", got.State)
	}
	three := early
	three.Quantity = 3
	for _, openid := range []string{"o-late-a", "o-late-b", "o-late-c", "o-late-d"} {
		if a := h.do("POST", "/api/v1/orders", h.signIn(openid), three); a.status == 201 {
			break
		} else {
			t.Fatalf("%s ordering 3 of the 4 back in stock: %d %s", openid, a.status, a.body)
		}
	}
	two := early
	two.Quantity = 2
	a := h.do("POST", "/api/v1/orders", h.signIn("o-late-e"), two)
	h.refused(a, 409, "not_enough_stock")
	if !strings.Contains(string(a.body), "Only 1 ") {
		t.Errorf("the refusal does not say how many are left: %s", a.body)
	}

	// Restart with a larger quota over two shards: the difference is added
	// to what remains, and it sells exactly.
	h.cfg.StockShards = 2
	h.cfg.Events[0].Types[0].Tiers[0].Quota = 13
	h.swapIssuer(h.iss)
	if n := h.remaining("gala", "std", "early"); n != 4 {
		t.Fatalf("remaining after the quota rose by 3 over 2 shards: %d; want 4", n)
	}
	for i := range 4 {
		h.order(h.signIn(fmt.Sprintf("o-after-%d", i)), one)
	}
	h.refused(h.do("POST", "/api/v1/orders", h.signIn("o-after-x"), one), 409, "sold_out")
	orders, _, err := h.st.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if orders[sales.OrderHeld] != 13 {
		t.Errorf("held tickets: %d; want the quota, 13", orders[sales.OrderHeld])
	}
}
