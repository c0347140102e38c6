package sales_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre/realname"
	"github.com/gated-dev/gated/centre/sales"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var (
	orderNoRe = regexp.MustCompile(`G\d{12}[0-9A-F]{10}`)
	ticketRe  = regexp.MustCompile(`[0-9a-f]{24}`)
)

// TestRefusalsGolden walks a buyer into every refusal the API gives and
// keeps the answers in testdata/refusals.golden: the catalogue the mini
// program team reads, and a guard against a message turning unclear.
func TestRefusalsGolden(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	h := newHarnessAt(t, start, func(c *sales.Config) { c.UserRate, c.UserBurst = 60, 20 })
	var out bytes.Buffer
	note := func(name string, a answer) {
		t.Helper()
		var e sales.ErrorBody
		if a.status < 400 || json.Unmarshal(a.body, &e) != nil || e.Error == "" || e.Message == "" {
			t.Fatalf("%s: %d %s is not a refusal with a code and a message", name, a.status, a.body)
		}
		line := fmt.Sprintf("%-34s %d %-20s %s\n", name, a.status, e.Error, e.Message)
		if ra := a.header.Get("Retry-After"); ra != "" {
			line = line[:len(line)-1] + " [Retry-After: " + ra + "]\n"
		}
		out.WriteString(ticketRe.ReplaceAllString(orderNoRe.ReplaceAllString(line, "<order>"), "<ticket>"))
	}
	live := func(hs ...realname.Holder) sales.OrderRequest {
		return sales.OrderRequest{Event: "live", Type: "floor", Tier: "std", Quantity: len(hs), Holders: hs}
	}
	early := func(n int) sales.OrderRequest {
		return sales.OrderRequest{Event: "gala", Type: "std", Tier: "early", Quantity: n}
	}

	var evs bytes.Buffer
	json.Indent(&evs, h.do("GET", "/api/v1/events", "", nil).body, "", "  ")
	golden(t, "testdata/events.golden.json", evs.Bytes())

	note("login: bad code", h.do("POST", "/api/v1/login", "", map[string]string{"code": "forged"}))
	h.login.Block("o-risky", 40226)
	note("login: high-risk user", h.do("POST", "/api/v1/login", "", map[string]string{"code": h.login.Code("o-risky")}))
	h.login.Block("o-busy", 45011)
	note("login: wechat rate limit", h.do("POST", "/api/v1/login", "", map[string]string{"code": h.login.Code("o-busy")}))
	note("no token", h.do("GET", "/api/v1/orders", "", nil))
	note("unknown token", h.do("GET", "/api/v1/orders", "nope", nil))
	note("unknown event", h.do("GET", "/api/v1/events/nope", "", nil))

	alice := h.signIn("o-alice")
	note("order: not json", h.do("POST", "/api/v1/orders", alice, jsonRaw("{")))
	note("order: unknown tier", h.do("POST", "/api/v1/orders", alice, sales.OrderRequest{Event: "gala", Type: "std", Tier: "vip", Quantity: 1}))
	note("order: quantity", h.do("POST", "/api/v1/orders", alice, early(0)))
	note("order: real-name, no holders", h.do("POST", "/api/v1/orders", alice, sales.OrderRequest{Event: "live", Type: "floor", Tier: "std", Quantity: 1}))
	note("order: bad id number", h.do("POST", "/api/v1/orders", alice, live(realname.Holder{Name: "张三", ID: "110105194912310021"})))
	note("order: bad name", h.do("POST", "/api/v1/orders", alice, live(realname.Holder{Name: "", ID: idA})))
	note("order: same id twice", h.do("POST", "/api/v1/orders", alice, live(realname.Holder{Name: "张三", ID: idA}, realname.Holder{Name: "张三", ID: idA})))
	note("order: holders on a plain event", h.do("POST", "/api/v1/orders", alice, sales.OrderRequest{Event: "gala", Type: "std", Tier: "early", Quantity: 1, Holders: []realname.Holder{{Name: "张三", ID: idA}}}))

	paid := h.buy(alice, early(4))
	h.order(alice, live(realname.Holder{Name: "张小三", ID: idA}))
	note("order: per-buyer limit", h.do("POST", "/api/v1/orders", alice, early(3)))
	bob := h.signIn("o-bob")
	note("order: id has a ticket", h.do("POST", "/api/v1/orders", bob, live(realname.Holder{Name: "张小三", ID: idA})))
	h.order(bob, early(4))
	note("order: not enough left", h.do("POST", "/api/v1/orders", bob, early(4)))
	carol := h.signIn("o-carol")
	h.order(carol, early(2))
	note("order: sold out", h.do("POST", "/api/v1/orders", carol, early(1)))
	note("pay: someone else's order", h.do("POST", "/api/v1/orders/"+paid.No+"/pay", bob, nil))
	note("pay: paid already", h.do("POST", "/api/v1/orders/"+paid.No+"/pay", alice, nil))
	for range 50 {
		if a := h.do("POST", "/api/v1/orders", carol, early(1)); a.status == 429 {
			note("rate limit", a)
			break
		}
	}

	dan := h.signIn("o-dan")
	late := h.order(dan, gala)
	h.clock.Add(16 * time.Minute)
	note("pay: hold expired", h.do("POST", "/api/v1/orders/"+late.No+"/pay", dan, nil))

	note("refund: not my ticket", h.do("POST", "/api/v1/tickets/"+paid.Tickets[0].ID+"/refund", bob, nil))
	var offer sales.TransferOffer
	h.mustDo("POST", "/api/v1/tickets/"+paid.Tickets[0].ID+"/transfer", alice, nil, 201, &offer)
	note("accept: own transfer", h.do("POST", "/api/v1/transfers/"+offer.Code+"/accept", alice, sales.AcceptRequest{}))
	note("accept: unknown code", h.do("POST", "/api/v1/transfers/NOPE/accept", bob, sales.AcceptRequest{}))
	h.mustDo("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{}, 200, nil)
	note("refund: received by transfer", h.do("POST", "/api/v1/tickets/"+paid.Tickets[0].ID+"/refund", bob, nil))
	h.mustDo("POST", "/api/v1/tickets/"+paid.Tickets[1].ID+"/transfer", alice, nil, 201, &offer)
	h.clock.Add(25 * time.Hour)
	bob = h.signIn("o-bob")
	note("accept: expired code", h.do("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{}))
	h.clock.Set(h.doors.Add(-time.Hour))
	alice = h.signIn("o-alice")
	note("refund: frozen", h.do("POST", "/api/v1/tickets/"+paid.Tickets[1].ID+"/refund", alice, nil))
	note("transfer: frozen", h.do("POST", "/api/v1/tickets/"+paid.Tickets[1].ID+"/transfer", alice, nil))
	h.clock.Set(h.cfg.Events[0].Ends)
	note("order: event over", h.do("POST", "/api/v1/orders", h.signIn("o-erin"), gala))

	golden(t, "testdata/refusals.golden", out.Bytes())
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs (go test -run %s -update rewrites it):\n--- got\n%s\n--- want\n%s", path, t.Name(), got, want)
	}
}
