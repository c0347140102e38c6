package sales_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre/sales"
)

// TestNoOversell runs 2,000 buyers at once through the HTTP API against
// 500 tickets: exactly 500 are held, the rest are told it is sold out,
// and paying for every hold issues exactly 500 tickets.
func TestNoOversell(t *testing.T) {
	const buyers, stock = 2000, 500
	h := newHarness(t, func(c *sales.Config) {
		c.Events = append(c.Events, sales.Event{ID: "rush", Name: "Rush", DoorsOpen: c.Events[0].DoorsOpen, Ends: c.Events[0].Ends,
			Types: []sales.TicketType{{ID: "ga", Name: "General", Tiers: []sales.Tier{{ID: "std", Name: "Standard", Price: 5000, Quota: stock}}}}})
		c.UserRate, c.AddrRate = -1, -1 // every buyer comes from 127.0.0.1
	})
	tr := h.srv.Client().Transport.(*http.Transport)
	tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = 128, 128

	post := func(path, token string, body any) (int, []byte, error) {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", h.srv.URL+path, bytes.NewReader(b))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		rb, err := io.ReadAll(resp.Body)
		return resp.StatusCode, rb, err
	}

	codes := make([]string, buyers)
	for i := range codes {
		codes[i] = h.login.Code(fmt.Sprintf("o-buyer-%04d", i))
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	held := map[string]string{} // order no -> token
	statuses := map[string]int{}
	for i := range buyers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			st, b, err := post("/api/v1/login", "", map[string]string{"code": codes[i]})
			var lr sales.LoginResponse
			if err != nil || st != 200 || json.Unmarshal(b, &lr) != nil {
				t.Errorf("login %d: %d %s %v", i, st, b, err)
				return
			}
			st, b, err = post("/api/v1/orders", lr.Token, sales.OrderRequest{Event: "rush", Type: "ga", Tier: "std", Quantity: 1})
			if err != nil {
				t.Errorf("order %d: %v", i, err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch st {
			case 201:
				var o sales.OrderView
				json.Unmarshal(b, &o)
				held[o.No] = lr.Token
				statuses["held"]++
			case 409:
				var e sales.ErrorBody
				json.Unmarshal(b, &e)
				statuses[e.Error]++
			default:
				t.Errorf("order %d: %d %s", i, st, b)
			}
		}()
	}
	close(start)
	wg.Wait()
	if statuses["held"] != stock || statuses["sold_out"] != buyers-stock || len(held) != stock {
		t.Fatalf("outcomes %v, %d orders", statuses, len(held))
	}
	if n := h.remaining("rush", "ga", "std"); n != 0 {
		t.Fatalf("remaining %d", n)
	}

	// Pay every hold, 16 at a time.
	sem := make(chan struct{}, 16)
	for no, tok := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if st, b, err := post("/api/v1/orders/"+no+"/pay", tok, nil); err != nil || st != 200 {
				t.Errorf("pay %s: %d %s %v", no, st, b, err)
				return
			}
			res, err := h.pay.Pay(no)
			if err != nil {
				t.Error(err)
				return
			}
			if st, err := h.pay.Notify("TRANSACTION.SUCCESS", res, time.Now()).Send(h.srv.Client(), h.srv.URL+"/api/v1/wxpay/notify"); err != nil || st != 204 {
				t.Errorf("notify %s: %d %v", no, st, err)
			}
		}()
	}
	wg.Wait()
	orders, tickets, err := h.st.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if orders[sales.OrderPaid] != stock || orders[sales.OrderHeld] != 0 || tickets[sales.TicketValid] != stock {
		t.Fatalf("orders %v, tickets %v", orders, tickets)
	}
	if h.iss.issues.Load() != stock {
		t.Fatalf("%d issue calls", h.iss.issues.Load())
	}
}
