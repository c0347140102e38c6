package sales_test

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre/realname"
	"github.com/gated-dev/gated/centre/sales"
	"github.com/gated-dev/gated/centre/wxpay"
	"github.com/gated-dev/gated/verify"
)

var gala = sales.OrderRequest{Event: "gala", Type: "std", Tier: "full", Quantity: 2}

func TestBuyPayIssue(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.signIn("o-alice")

	var evs []sales.EventView
	h.mustDo("GET", "/api/v1/events", "", nil, 200, &evs)
	if len(evs) != 2 || evs[0].Types[0].Tiers[1].Remaining != 500 || evs[0].Types[0].Tiers[1].Price != 12800 {
		t.Fatalf("events: %+v", evs)
	}

	o := h.order(tok, gala)
	if o.State != sales.OrderHeld || o.Total != 25600 || !o.HoldUntil.Equal(h.clock.Now().Add(15*time.Minute)) {
		t.Fatalf("order %+v", o)
	}
	if n := h.remaining("gala", "std", "full"); n != 498 {
		t.Fatalf("remaining %d after holding 2", n)
	}

	rp := h.prepay(tok, o.No)
	// The phone passes these to wx.requestPayment; WeChat checks paySign
	// with the merchant's public key.
	msg := rp.AppID + "\n" + rp.TimeStamp + "\n" + rp.NonceStr + "\n" + rp.Package + "\n"
	sig, _ := base64.StdEncoding.DecodeString(rp.PaySign)
	sum := sha256.Sum256([]byte(msg))
	if err := rsa.VerifyPKCS1v15(&h.pay.MchKey.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		t.Fatalf("paySign: %v", err)
	}
	if fo, _ := h.pay.Order(o.No); fo.Total != 25600 || fo.OpenID != "o-alice" || !fo.Expire.Equal(o.HoldUntil) {
		t.Fatalf("WeChat Pay order %+v: want total 25600, payer o-alice, expiring with the hold", fo)
	}

	h.payAndNotify(o.No)
	var paid sales.OrderView
	h.mustDo("GET", "/api/v1/orders/"+o.No, tok, nil, 200, &paid)
	if paid.State != sales.OrderPaid || len(paid.Tickets) != 2 {
		t.Fatalf("paid order %+v", paid)
	}
	ts := h.tickets(tok)
	if len(ts) != 2 {
		t.Fatalf("tickets %+v", ts)
	}
	for _, tk := range ts {
		if tk.State != sales.TicketValid || tk.Serial != 1 || tk.Code == "" {
			t.Fatalf("ticket %+v", tk)
		}
		if r := h.gateDecision("gala", tk.Code); r != verify.ReasonOK {
			t.Fatalf("gate says %s for a paid ticket", r)
		}
	}
	// Another buyer sees neither the order nor the tickets.
	bob := h.signIn("o-bob")
	h.refused(h.do("GET", "/api/v1/orders/"+o.No, bob, nil), 404, "unknown_order")
	h.refused(h.do("POST", "/api/v1/orders/"+o.No+"/pay", bob, nil), 404, "unknown_order")
	h.refused(h.do("POST", "/api/v1/tickets/"+ts[0].ID+"/refund", bob, nil), 404, "unknown_ticket")
	if len(h.tickets(bob)) != 0 {
		t.Fatal("bob sees alice's tickets")
	}
	h.refused(h.do("POST", "/api/v1/orders/"+o.No+"/pay", tok, nil), 409, "already_paid")
}

func TestLogin(t *testing.T) {
	h := newHarness(t, nil)
	h.login.Block("o-busy", 45011)
	h.login.Block("o-risky", 40226)
	used := h.login.Code("o-carol")
	h.mustDo("POST", "/api/v1/login", "", map[string]string{"code": used}, 200, nil)
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"unknown code", map[string]string{"code": "forged"}, 400, "invalid_code"},
		{"code used twice", map[string]string{"code": used}, 400, "invalid_code"},
		{"rate limited", map[string]string{"code": h.login.Code("o-busy")}, 429, "wechat_rate_limited"},
		{"high risk", map[string]string{"code": h.login.Code("o-risky")}, 403, "high_risk_user"},
		{"not json", "{", 400, "bad_request"},
		{"unknown field", map[string]string{"kode": "x"}, 400, "bad_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := h.do("POST", "/api/v1/login", "", tc.body)
			h.refused(a, tc.status, tc.code)
			if tc.status == 429 && a.header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
		})
	}
	h.refused(h.do("GET", "/api/v1/orders", "", nil), 401, "unauthenticated")
	h.refused(h.do("GET", "/api/v1/orders", "not-a-token", nil), 401, "session_expired")
	tok := h.signIn("o-dave")
	h.mustDo("GET", "/api/v1/orders", tok, nil, 200, nil)
	h.clock.Add(7*24*time.Hour + time.Second)
	h.refused(h.do("GET", "/api/v1/orders", tok, nil), 401, "session_expired")
	fresh := h.signIn("o-erin")
	// carol's and dave's sign-ins have expired; erin's has not.
	if n, err := h.s.PurgeSessions(); err != nil || n != 2 {
		t.Fatalf("purged %d sessions (%v), want 2", n, err)
	}
	h.mustDo("GET", "/api/v1/orders", fresh, nil, 200, nil)
}

func TestOrderRefusals(t *testing.T) {
	h := newHarness(t, func(c *sales.Config) { c.MaxPerUser = 3 })
	tok := h.signIn("o-alice")
	for _, tc := range []struct {
		name   string
		req    sales.OrderRequest
		status int
		code   string
	}{
		{"unknown event", sales.OrderRequest{Event: "nope", Type: "std", Tier: "full", Quantity: 1}, 404, "unknown_event"},
		{"unknown tier", sales.OrderRequest{Event: "gala", Type: "std", Tier: "vip", Quantity: 1}, 404, "unknown_tier"},
		{"zero", sales.OrderRequest{Event: "gala", Type: "std", Tier: "full"}, 400, "bad_quantity"},
		{"too many at once", sales.OrderRequest{Event: "gala", Type: "std", Tier: "full", Quantity: 5}, 400, "bad_quantity"},
		{"holders on a plain event", sales.OrderRequest{Event: "gala", Type: "std", Tier: "full", Quantity: 1, Holders: []realname.Holder{{Name: "张三", ID: idA}}}, 400, "no_holders"},
	} {
		t.Run(tc.name, func(t *testing.T) { h.refused(h.do("POST", "/api/v1/orders", tok, tc.req), tc.status, tc.code) })
	}
	h.order(tok, sales.OrderRequest{Event: "gala", Type: "std", Tier: "early", Quantity: 3})
	// Per-buyer limit: 3 held already.
	h.refused(h.do("POST", "/api/v1/orders", tok, sales.OrderRequest{Event: "gala", Type: "std", Tier: "full", Quantity: 1}), 409, "user_limit")
	bob := h.signIn("o-bob")
	h.refused(h.do("POST", "/api/v1/orders", bob, sales.OrderRequest{Event: "gala", Type: "std", Tier: "early", Quantity: 8}), 400, "bad_quantity")
	h.order(bob, sales.OrderRequest{Event: "gala", Type: "std", Tier: "early", Quantity: 3})
	carol := h.signIn("o-carol")
	h.order(carol, sales.OrderRequest{Event: "gala", Type: "std", Tier: "early", Quantity: 3})
	dave := h.signIn("o-dave")
	h.refused(h.do("POST", "/api/v1/orders", dave, sales.OrderRequest{Event: "gala", Type: "std", Tier: "early", Quantity: 2}), 409, "not_enough_stock")
	h.order(dave, sales.OrderRequest{Event: "gala", Type: "std", Tier: "early", Quantity: 1})
	h.refused(h.do("POST", "/api/v1/orders", dave, sales.OrderRequest{Event: "gala", Type: "std", Tier: "early", Quantity: 1}), 409, "sold_out")
	// After the event, nothing is sold.
	h.clock.Set(h.cfg.Events[0].Ends)
	h.refused(h.do("POST", "/api/v1/orders", h.signIn("o-erin"), gala), 409, "sales_closed")
}

func TestRateLimits(t *testing.T) {
	h := newHarness(t, func(c *sales.Config) {
		c.UserRate, c.UserBurst = 6, 2 // one every 10 s
		c.AddrRate, c.AddrBurst = 6, 8
	})
	tok := h.signIn("o-alice")
	one := sales.OrderRequest{Event: "gala", Type: "std", Tier: "full", Quantity: 1}
	h.order(tok, one)
	h.order(tok, one)
	a := h.do("POST", "/api/v1/orders", tok, one)
	h.refused(a, 429, "rate_limited")
	if a.header.Get("Retry-After") != "10" {
		t.Fatalf("Retry-After %q, want 10", a.header.Get("Retry-After"))
	}
	if !contains(string(a.body), "wait 10 s") {
		t.Fatalf("message does not say how long: %s", a.body)
	}
	h.clock.Add(10 * time.Second)
	h.order(tok, one)
	// Reads are not limited.
	for range 5 {
		h.mustDo("GET", "/api/v1/orders", tok, nil, 200, nil)
	}
	// The address limit holds across accounts: a burst of 8 from here, one
	// more every 10 s; 5 taken so far (a login, 4 orders), 1 refilled.
	b, c := h.signIn("o-bob"), h.signIn("o-carol")
	h.order(b, one)
	h.order(c, one)
	h.refused(h.do("POST", "/api/v1/orders", c, one), 429, "rate_limited")
}

func TestNotificationIdempotent(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.signIn("o-alice")
	o := h.order(tok, gala)
	h.prepay(tok, o.No)
	n := h.payAndNotify(o.No)
	// WeChat Pay repeats notifications until it sees success, and may send
	// two at once: the tickets are issued once.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := n.Send(h.srv.Client(), h.srv.URL+"/api/v1/wxpay/notify"); err != nil || st != 204 {
				t.Errorf("repeat: %d %v", st, err)
			}
		}()
	}
	wg.Wait()
	if h.iss.issues.Load() != 1 {
		t.Fatalf("issued %d times", h.iss.issues.Load())
	}
	if len(h.tickets(tok)) != 2 {
		t.Fatal("want 2 tickets")
	}
}

func TestConcurrentFirstNotifications(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.signIn("o-alice")
	o := h.order(tok, gala)
	h.prepay(tok, o.No)
	res, _ := h.pay.Pay(o.No)
	n := h.pay.Notify("TRANSACTION.SUCCESS", res, time.Now())
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, err := n.Send(h.srv.Client(), h.srv.URL+"/api/v1/wxpay/notify"); err != nil || st != 204 {
				t.Errorf("notify: %d %v", st, err)
			}
		}()
	}
	// And reconciliation racing them.
	h.clock.Add(2 * time.Minute)
	if err := h.s.Reconcile(t.Context()); err != nil {
		t.Error(err)
	}
	wg.Wait()
	if h.iss.issues.Load() != 1 || len(h.tickets(tok)) != 2 {
		t.Fatalf("issued %d times, %d tickets", h.iss.issues.Load(), len(h.tickets(tok)))
	}
}

func TestNotificationRefused(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.signIn("o-alice")
	o := h.order(tok, gala)
	h.prepay(tok, o.No)
	res, _ := h.pay.Pay(o.No)
	url := h.srv.URL + "/api/v1/wxpay/notify"
	send := func(mut func(map[string]any)) int {
		r := map[string]any{}
		b, _ := json.Marshal(res)
		json.Unmarshal(b, &r)
		mut(r)
		st, err := h.pay.Notify("TRANSACTION.SUCCESS", r, time.Now()).Send(h.srv.Client(), url)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	for _, tc := range []struct {
		name   string
		mut    func(map[string]any)
		status int
		log    string
	}{
		{"amount", func(r map[string]any) { r["amount"] = map[string]any{"total": 1, "currency": "CNY"} }, 400, "payment amount mismatch"},
		{"merchant", func(r map[string]any) { r["mchid"] = "1900000999" }, 400, "payment merchant mismatch"},
		{"appid", func(r map[string]any) { r["appid"] = "wxother" }, 400, "payment merchant mismatch"},
		{"unknown order", func(r map[string]any) { r["out_trade_no"] = "G000000000000NOPE" }, 404, "payment for unknown order"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if st := send(tc.mut); st != tc.status {
				t.Fatalf("status %d, want %d", st, tc.status)
			}
			if !contains(h.logs.String(), tc.log) {
				t.Fatalf("log lacks %q:\n%s", tc.log, h.logs.String())
			}
		})
	}
	// A forged notification (signed by someone else) is refused.
	n := h.pay.Notify("TRANSACTION.SUCCESS", res, time.Now())
	n.Body = append(n.Body[:len(n.Body)-1:len(n.Body)-1], []byte(` }`)...)
	if st, _ := n.Send(h.srv.Client(), url); st != 401 {
		t.Fatalf("tampered notification: %d", st)
	}
	got, _ := h.st.Order(o.No)
	if got.State != sales.OrderHeld || h.iss.issues.Load() != 0 {
		t.Fatalf("refused notifications changed the order: %+v", got)
	}
	// The genuine one still works afterwards.
	if st := send(func(map[string]any) {}); st != 204 {
		t.Fatalf("genuine notification: %d", st)
	}
	if got, _ := h.st.Order(o.No); got.State != sales.OrderPaid || !got.Issued {
		t.Fatalf("order %+v", got)
	}
}

func TestHoldExpires(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.signIn("o-alice")
	plain := h.order(tok, gala)   // never sent to WeChat Pay
	prepaid := h.order(tok, gala) // prepaid, never paid
	h.prepay(tok, prepaid.No)
	paying := h.order(tok, sales.OrderRequest{Event: "gala", Type: "std", Tier: "early", Quantity: 2})
	h.prepay(tok, paying.No)
	h.pay.Pay(paying.No) // paid, but the notification is lost
	if n := h.remaining("gala", "std", "full"); n != 496 {
		t.Fatalf("remaining %d", n)
	}
	h.clock.Add(14 * time.Minute)
	if err := h.s.SweepHolds(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := h.remaining("gala", "std", "full"); n != 496 {
		t.Fatal("a hold was released early")
	}
	h.clock.Add(time.Minute)
	if err := h.s.SweepHolds(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := h.remaining("gala", "std", "full"); n != 500 {
		t.Fatalf("remaining %d after expiry, want 500", n)
	}
	for _, no := range []string{plain.No, prepaid.No} {
		if o, _ := h.st.Order(no); o.State != sales.OrderExpired {
			t.Fatalf("%s: %s", no, o.State)
		}
	}
	if fo, _ := h.pay.Order(prepaid.No); fo.State != wxpay.TradeClosed {
		t.Fatalf("the WeChat Pay order was left open: %s", fo.State)
	}
	// The paid one was asked about instead of dropped.
	if o, _ := h.st.Order(paying.No); o.State != sales.OrderPaid || !o.Issued {
		t.Fatalf("paid order with a lost notification: %+v", o)
	}
	h.refused(h.do("POST", "/api/v1/orders/"+plain.No+"/pay", tok, nil), 410, "hold_expired")
	// The expired holds no longer count against the buyer's limit.
	h.order(tok, sales.OrderRequest{Event: "gala", Type: "std", Tier: "full", Quantity: 4})
}

func TestReconcileStuckOrder(t *testing.T) {
	h := newHarness(t, func(c *sales.Config) { c.ReconcileAfter = sales.Duration(2 * time.Minute) })
	tok := h.signIn("o-alice")
	o := h.order(tok, gala)
	h.prepay(tok, o.No)
	h.pay.Pay(o.No) // the notification never comes
	h.clock.Add(time.Minute)
	if err := h.s.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.st.Order(o.No); got.State != sales.OrderHeld {
		t.Fatal("queried before reconcile_after")
	}
	h.clock.Add(time.Minute)
	if err := h.s.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.st.Order(o.No); got.State != sales.OrderPaid || len(h.tickets(tok)) != 2 {
		t.Fatalf("after reconcile: %+v", got)
	}
}

// TestReconcileQueryCap: a round asks WeChat Pay about at most
// reconcile_max_queries orders, oldest first; the rest are asked in the
// rounds after.
func TestReconcileQueryCap(t *testing.T) {
	h := newHarness(t, func(c *sales.Config) { c.ReconcileMaxQueries = 2 })
	var nos []string
	for i := range 5 {
		tok := h.signIn(fmt.Sprintf("o-cap-%d", i))
		o := h.order(tok, gala)
		h.prepay(tok, o.No)
		h.pay.Pay(o.No) // paid; the notification never comes
		nos = append(nos, o.No)
		h.clock.Add(time.Second)
	}
	h.clock.Add(2 * time.Minute)
	for round, want := range []int{2, 4, 5} {
		if err := h.s.Reconcile(t.Context()); err != nil {
			t.Fatal(err)
		}
		for i, no := range nos {
			got, _ := h.st.Order(no)
			if paid := got.State == sales.OrderPaid; paid != (i < want) {
				t.Fatalf("after round %d: order %d of 5 is %s; want the oldest %d paid", round+1, i+1, got.State, want)
			}
		}
	}
	if !strings.Contains(h.logs.String(), "deferred=3") {
		t.Errorf("the deferred orders are not logged:\n%s", h.logs.String())
	}
}

func TestIssueFailureResumed(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.signIn("o-alice")
	o := h.order(tok, gala)
	h.prepay(tok, o.No)
	h.iss.fail.Store(true)
	h.payAndNotify(o.No) // WeChat Pay gets success: the payment is recorded
	if got, _ := h.st.Order(o.No); got.State != sales.OrderPaid || got.Issued || got.IssueError == "" {
		t.Fatalf("order %+v", got)
	}
	if err := h.s.Reconcile(t.Context()); err == nil {
		t.Fatal("reconcile hid the failing issuer")
	}
	h.iss.fail.Store(false)
	if err := h.s.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(h.tickets(tok)) != 2 {
		t.Fatal("tickets not issued after the issuer came back")
	}
}

// The centre issued but its answer was lost: reconciliation gets the same
// tickets back instead of issuing a second set.
func TestLostIssueAnswer(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.signIn("o-alice")
	o := h.order(tok, gala)
	h.prepay(tok, o.No)
	h.iss.loseIssue.Store(true)
	h.payAndNotify(o.No)
	h.iss.loseIssue.Store(false)
	if err := h.s.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	mine := h.tickets(tok)
	if len(mine) != 2 {
		t.Fatalf("%d tickets", len(mine))
	}
	data, err := h.centre.Export(gala.Event)
	if err != nil {
		t.Fatal(err)
	}
	b, _, _, err := verify.OpenBundle(data, h.centre.RootPublic())
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Tickets) != 2 {
		t.Fatalf("the centre holds %d tickets for a 2-ticket order", len(b.Tickets))
	}
}

func TestLatePayment(t *testing.T) {
	h := newHarness(t, nil)
	alice, bob := h.signIn("o-alice"), h.signIn("o-bob")
	early := sales.OrderRequest{Event: "gala", Type: "std", Tier: "early", Quantity: 4}
	a := h.order(alice, early)
	h.prepay(alice, a.No)
	b := h.order(bob, gala)
	h.prepay(bob, b.No)
	// Both holds run out while WeChat Pay is down, so they cannot be asked.
	h.pay.Fail = func(r *http.Request) (int, string) { return 500, "SYSTEM_ERROR" }
	h.clock.Add(16 * time.Minute)
	if err := h.s.SweepHolds(t.Context()); err == nil {
		t.Fatal("sweep hid the query failure")
	}
	if got, _ := h.st.Order(a.No); got.State != sales.OrderHeld {
		t.Fatal("a prepaid hold was released without asking WeChat Pay")
	}
	// Then it answers queries but fails to close the orders, and both
	// buyers still manage to pay.
	h.pay.Fail = func(r *http.Request) (int, string) {
		if strings.HasSuffix(r.URL.Path, "/close") {
			return 500, "SYSTEM_ERROR"
		}
		return 0, ""
	}
	if err := h.s.SweepHolds(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.st.Order(a.No); got.State != sales.OrderExpired {
		t.Fatalf("hold not released: %s", got.State)
	}
	h.pay.Fail = nil
	h.order(h.signIn("o-carol"), early)
	h.order(h.signIn("o-dan"), early)
	// Alice's payment arrives late: 2 early-bird seats left, she wants 4.
	h.payAndNotify(a.No)
	got, _ := h.st.Order(a.No)
	if got.State != sales.OrderPaidNoStock {
		t.Fatalf("late payment without stock: %s", got.State)
	}
	if err := h.s.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rf, ok := h.pay.Refund("R" + a.No + "-ALL"); !ok || rf.Refund != a.Total {
		t.Fatalf("no full refund at WeChat Pay: %+v", rf)
	}
	if n := h.remaining("gala", "std", "early"); n != 2 {
		t.Fatalf("remaining %d", n)
	}
	// Bob's late payment finds stock: he gets his tickets.
	h.payAndNotify(b.No)
	if got, _ := h.st.Order(b.No); got.State != sales.OrderPaid || len(h.tickets(bob)) != 2 {
		t.Fatalf("bob: %+v", got)
	}
	if n := h.remaining("gala", "std", "full"); n != 498 {
		t.Fatalf("remaining full %d", n)
	}
}

func TestStandaloneNotFound(t *testing.T) {
	h := newHarness(t, nil)
	for _, r := range []*http.Request{httptest.NewRequest("GET", "/api/v1/nope", nil), httptest.NewRequest("DELETE", "/api/v1/orders", nil)} {
		rec := httptest.NewRecorder()
		h.s.ServeHTTP(rec, r)
		h.refused(answer{rec.Code, rec.Header(), rec.Body.Bytes()}, 404, "not_found")
	}
}

func TestRateLimitBehindProxy(t *testing.T) {
	h := newHarness(t, func(c *sales.Config) {
		c.AddrRate, c.AddrBurst = 1, 1
		c.ClientIPHeader = "X-Forwarded-For"
	})
	login := func(xff string) int {
		req, _ := http.NewRequest("POST", h.srv.URL+"/api/v1/login", strings.NewReader(`{"code":"`+h.login.Code("o-x")+`"}`))
		req.Header.Set("X-Forwarded-For", xff)
		resp, err := h.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The proxy appends the address it saw; what the client sent before it
	// does not choose the bucket.
	if login("10.9.9.9, 203.0.113.7") != 200 || login("203.0.113.8") != 200 {
		t.Fatal("two clients share a bucket")
	}
	if st := login("10.1.1.1, 203.0.113.7"); st != 429 {
		t.Fatalf("second request from 203.0.113.7: %d, want 429", st)
	}
}
