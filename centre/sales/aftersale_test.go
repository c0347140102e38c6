package sales_test

import (
	"bytes"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre/realname"
	"github.com/gated-dev/gated/centre/sales"
	"github.com/gated-dev/gated/centre/wxpay"
	"github.com/gated-dev/gated/verify"
)

func TestRefund(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.signIn("o-alice")
	o := h.buy(tok, gala)
	tk := o.Tickets[0]
	if n := h.remaining("gala", "std", "full"); n != 498 {
		t.Fatalf("remaining %d", n)
	}
	var rv sales.RefundView
	h.mustDo("POST", "/api/v1/tickets/"+tk.ID+"/refund", tok, nil, 202, &rv)
	wantNo := "R" + o.No + "-0" // deterministic: a retry is the same refund
	if rv.OutRefundNo != wantNo || rv.Amount != 12800 || rv.Status != wxpay.RefundProcessing || rv.Ticket.State != sales.TicketRefunding {
		t.Fatalf("refund %+v", rv)
	}
	// Revoked at the centre before the money moved: the gate refuses it.
	if r := h.gateDecision("gala", tk.Code); r != verify.ReasonRevoked {
		t.Fatalf("gate says %s for a refunded ticket", r)
	}
	if rv.Ticket.Code != "" {
		t.Fatal("a refunded ticket still shows its code")
	}
	if rf, ok := h.pay.Refund(wantNo); !ok || rf.Refund != 12800 || rf.Total != 25600 {
		t.Fatalf("WeChat Pay refund %+v", rf)
	}
	if n := h.remaining("gala", "std", "full"); n != 499 {
		t.Fatalf("refunded seat not back on sale: %d", n)
	}
	// Asking again changes nothing.
	h.mustDo("POST", "/api/v1/tickets/"+tk.ID+"/refund", tok, nil, 202, &rv)
	if rf, _ := h.pay.Refund(wantNo); rf.Calls != 1 {
		t.Fatalf("refund asked %d times", rf.Calls)
	}
	// WeChat Pay's notification, twice: recorded once.
	res, _ := h.pay.CompleteRefund(wantNo)
	n := h.pay.Notify("REFUND.SUCCESS", res, time.Now())
	for range 2 {
		if st, err := n.Send(h.srv.Client(), h.srv.URL+"/api/v1/wxpay/refund-notify"); err != nil || st != 204 {
			t.Fatalf("refund notification: %d %v", st, err)
		}
	}
	got, _ := h.st.Ticket(tk.ID)
	if got.State != sales.TicketRefunded {
		t.Fatalf("ticket %s", got.State)
	}
	if c := strings.Count(h.logs.String(), "status=SUCCESS"); c != 1 {
		t.Fatalf("refund success recorded %d times", c)
	}
	// A refund notification with another amount is refused.
	res2 := map[string]any{}
	for k, v := range res {
		res2[k] = v
	}
	res2["amount"] = map[string]any{"total": 25600, "refund": 1}
	if st, _ := h.pay.Notify("REFUND.SUCCESS", res2, time.Now()).Send(h.srv.Client(), h.srv.URL+"/api/v1/wxpay/refund-notify"); st != 400 {
		t.Fatalf("mismatched refund notification: %d", st)
	}
	// The other ticket still gets in.
	if r := h.gateDecision("gala", o.Tickets[1].Code); r != verify.ReasonOK {
		t.Fatalf("the other ticket: %s", r)
	}
}

func TestRefundResumedAfterFailures(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.signIn("o-alice")
	o := h.buy(tok, gala)
	id := o.Tickets[0].ID
	// The centre is down: nothing is refunded until the ticket is revoked.
	h.iss.fail.Store(true)
	var rv sales.RefundView
	h.mustDo("POST", "/api/v1/tickets/"+id+"/refund", tok, nil, 202, &rv)
	if rv.Status != "PENDING" || rv.Ticket.State != sales.TicketRevoking {
		t.Fatalf("refund %+v", rv)
	}
	if _, ok := h.pay.Refund(rv.OutRefundNo); ok {
		t.Fatal("money refunded before the ticket was revoked")
	}
	h.iss.fail.Store(false)
	// Now WeChat Pay is down.
	h.pay.Fail = func(*http.Request) (int, string) { return 500, "SYSTEM_ERROR" }
	if err := h.s.Reconcile(t.Context()); err == nil {
		t.Fatal("reconcile hid the failure")
	}
	if got, _ := h.st.Ticket(id); got.State != sales.TicketRefundAsked {
		t.Fatalf("ticket %s", got.State)
	}
	if r := h.gateDecision("gala", o.Tickets[0].Code); r != verify.ReasonRevoked {
		t.Fatalf("gate: %s", r)
	}
	h.pay.Fail = nil
	if err := h.s.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rf, ok := h.pay.Refund(rv.OutRefundNo); !ok || rf.Refund != 12800 {
		t.Fatalf("refund %+v", rf)
	}
	if got, _ := h.st.Ticket(id); got.State != sales.TicketRefunding {
		t.Fatalf("ticket %s", got.State)
	}
}

func TestTransfer(t *testing.T) {
	h := newHarness(t, nil)
	alice, bob := h.signIn("o-alice"), h.signIn("o-bob")
	o := h.buy(alice, sales.OrderRequest{Event: "live", Type: "floor", Tier: "std", Quantity: 1,
		Holders: []realname.Holder{{Name: "张小三", ID: idA}}})
	old := o.Tickets[0]
	if old.Holder == nil || old.Holder.Name != "张*三" || old.Holder.ID != "****002X" {
		t.Fatalf("holder %+v", old.Holder)
	}
	if g := h.gateHolder("live", old.ID); g != "张*三 ****002X" {
		t.Fatalf("gate shows holder %q", g)
	}
	var offer sales.TransferOffer
	h.mustDo("POST", "/api/v1/tickets/"+old.ID+"/transfer", alice, nil, 201, &offer)
	h.refused(h.do("POST", "/api/v1/transfers/"+offer.Code+"/accept", alice, sales.AcceptRequest{Holder: &realname.Holder{Name: "李四", ID: idB}}), 409, "own_ticket")
	h.refused(h.do("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{}), 400, "holder_required")
	h.refused(h.do("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{Holder: &realname.Holder{Name: "李四", ID: "110101199003070012"}}), 400, "bad_id_number")
	h.refused(h.do("POST", "/api/v1/transfers/NOPE/accept", bob, sales.AcceptRequest{Holder: &realname.Holder{Name: "李四", ID: idB}}), 404, "unknown_transfer")

	var got sales.TicketView
	h.mustDo("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{Holder: &realname.Holder{Name: "李四", ID: idB}}, 200, &got)
	if got.ID != old.ID || got.Serial != 2 || got.Code == old.Code || got.Holder == nil || got.Holder.Name != "李*" || got.Holder.ID != "****0011" {
		t.Fatalf("transferred ticket %+v", got)
	}
	if len(h.tickets(alice)) != 0 || len(h.tickets(bob)) != 1 {
		t.Fatal("the ticket did not change hands")
	}
	if g := h.gateHolder("live", old.ID); g != "李* ****0011" {
		t.Fatalf("after the transfer the gate shows holder %q", g)
	}
	// The gate refuses the old code and admits the new one.
	if r := h.gateDecision("live", old.Code); r != verify.ReasonSuperseded {
		t.Fatalf("old code: %s", r)
	}
	if r := h.gateDecision("live", got.Code); r != verify.ReasonOK {
		t.Fatalf("new code: %s", r)
	}
	// The code works once.
	h.refused(h.do("POST", "/api/v1/transfers/"+offer.Code+"/accept", h.signIn("o-carol"), sales.AcceptRequest{Holder: &realname.Holder{Name: "王五", ID: idA}}), 404, "unknown_transfer")
	// Alice's id is free again: she may buy another ticket for the show.
	h.order(alice, sales.OrderRequest{Event: "live", Type: "floor", Tier: "std", Quantity: 1, Holders: []realname.Holder{{Name: "张小三", ID: idA}}})
	// Bob received it, so he cannot refund it (the money is Alice's).
	h.refused(h.do("POST", "/api/v1/tickets/"+got.ID+"/refund", bob, nil), 409, "not_refundable")
	// And Bob's id holds this show's one ticket.
	h.refused(h.do("POST", "/api/v1/orders", h.signIn("o-dan"), sales.OrderRequest{Event: "live", Type: "floor", Tier: "std", Quantity: 1,
		Holders: []realname.Holder{{Name: "李四", ID: idB}}}), 409, "id_limit")
}

// The centre re-issues the ticket but its answer is lost: the transfer
// must still complete, or the seller's code is dead at the gates and the
// buyer has nothing.
func TestTransferFinishedByReconcile(t *testing.T) {
	h := newHarness(t, nil)
	alice, bob := h.signIn("o-alice"), h.signIn("o-bob")
	o := h.buy(alice, gala)
	old := o.Tickets[0]
	var offer sales.TransferOffer
	h.mustDo("POST", "/api/v1/tickets/"+old.ID+"/transfer", alice, nil, 201, &offer)
	h.iss.loseReissue.Store(true)
	var got sales.TicketView
	h.mustDo("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{}, 202, &got)
	if got.State != sales.TicketTransferring {
		t.Fatalf("ticket %+v", got)
	}
	h.refused(h.do("POST", "/api/v1/tickets/"+old.ID+"/refund", alice, nil), 409, "ticket_busy")
	h.iss.loseReissue.Store(false)
	if err := h.s.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	ts := h.tickets(bob)
	if len(ts) != 1 || ts[0].ID != old.ID || ts[0].State != sales.TicketValid || ts[0].Serial != 3 {
		t.Fatalf("bob's tickets %+v: want the ticket at serial 3 (re-issued twice)", ts)
	}
	if len(h.tickets(alice)) != 1 {
		t.Fatal("alice should keep only her other ticket")
	}
	if r := h.gateDecision("gala", old.Code); r != verify.ReasonSuperseded {
		t.Fatalf("old code: %s", r)
	}
	if r := h.gateDecision("gala", ts[0].Code); r != verify.ReasonOK {
		t.Fatalf("new code: %s", r)
	}
	if err := h.s.Reconcile(t.Context()); err != nil || h.iss.reissues.Load() != 2 {
		t.Fatalf("reconcile again: %v, %d re-issues", err, h.iss.reissues.Load())
	}
}

func TestTransferIDLimitAndExpiry(t *testing.T) {
	h := newHarness(t, nil)
	alice, bob := h.signIn("o-alice"), h.signIn("o-bob")
	live := func(name, id string) sales.OrderRequest {
		return sales.OrderRequest{Event: "live", Type: "floor", Tier: "std", Quantity: 1, Holders: []realname.Holder{{Name: name, ID: id}}}
	}
	a := h.buy(alice, live("张小三", idA))
	h.buy(bob, live("李四", idB))
	var offer sales.TransferOffer
	h.mustDo("POST", "/api/v1/tickets/"+a.Tickets[0].ID+"/transfer", alice, nil, 201, &offer)
	// Bob's id has this show's ticket already.
	h.refused(h.do("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{Holder: &realname.Holder{Name: "李四", ID: idB}}), 409, "id_limit")
	if h.tickets(alice)[0].State != sales.TicketValid {
		t.Fatal("a refused transfer left the ticket locked")
	}
	h.clock.Add(24 * time.Hour)
	h.refused(h.do("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{Holder: &realname.Holder{Name: "王五", ID: "110101199003071219"}}), 410, "transfer_expired")
}

func TestFreeze(t *testing.T) {
	h := newHarness(t, func(c *sales.Config) { c.TransferTTL = sales.Duration(30 * 24 * time.Hour) })
	tok := h.signIn("o-alice")
	o := h.buy(tok, gala)
	var offer sales.TransferOffer
	h.mustDo("POST", "/api/v1/tickets/"+o.Tickets[1].ID+"/transfer", tok, nil, 201, &offer)
	h.clock.Set(h.doors.Add(-2 * time.Hour))
	tok, bob := h.signIn("o-alice"), h.signIn("o-bob")
	h.refused(h.do("POST", "/api/v1/tickets/"+o.Tickets[0].ID+"/refund", tok, nil), 409, "frozen")
	h.refused(h.do("POST", "/api/v1/tickets/"+o.Tickets[0].ID+"/transfer", tok, nil), 409, "frozen")
	h.refused(h.do("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{}), 409, "frozen")
	a := h.do("POST", "/api/v1/tickets/"+o.Tickets[0].ID+"/refund", tok, nil)
	if !strings.Contains(string(a.body), "2h0m0s before the doors") {
		t.Fatalf("message does not say why: %s", a.body)
	}
	if len(h.tickets(tok)) != 2 {
		t.Fatal("tickets changed")
	}
}

func TestRealNameOrders(t *testing.T) {
	h := newHarness(t, nil)
	tok := h.signIn("o-alice")
	ord := func(hs ...realname.Holder) sales.OrderRequest {
		return sales.OrderRequest{Event: "live", Type: "floor", Tier: "std", Quantity: len(hs), Holders: hs}
	}
	h.refused(h.do("POST", "/api/v1/orders", tok, sales.OrderRequest{Event: "live", Type: "floor", Tier: "std", Quantity: 1}), 400, "holders_required")
	h.refused(h.do("POST", "/api/v1/orders", tok, ord(realname.Holder{Name: "张三", ID: "110105194912310021"})), 400, "bad_id_number")
	h.refused(h.do("POST", "/api/v1/orders", tok, ord(realname.Holder{Name: " ", ID: idA})), 400, "bad_name")
	// One id, one ticket per show: within one order and across orders.
	h.refused(h.do("POST", "/api/v1/orders", tok, ord(realname.Holder{Name: "张三", ID: idA}, realname.Holder{Name: "张三", ID: strings.ToLower(idA)})), 409, "id_limit")
	o := h.order(tok, ord(realname.Holder{Name: "张小三", ID: idA}, realname.Holder{Name: "李四", ID: idB}))
	if len(o.Holders) != 2 || o.Holders[0].Name != "张*三" || o.Holders[1].ID != "****0011" {
		t.Fatalf("holders %+v", o.Holders)
	}
	a := h.do("POST", "/api/v1/orders", h.signIn("o-bob"), ord(realname.Holder{Name: "张小三", ID: idA}))
	h.refused(a, 409, "id_limit")
	if strings.Contains(string(a.body), idA) {
		t.Fatal("a refusal shows the id number")
	}
	// The expired hold frees the ids.
	h.clock.Add(16 * time.Minute)
	if err := h.s.SweepHolds(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.order(h.signIn("o-bob"), ord(realname.Holder{Name: "张小三", ID: idA}))
}

func TestRealNameStorageAndPurge(t *testing.T) {
	h := newHarness(t, func(c *sales.Config) { c.RealNameRetentionDays = 3 })
	tok := h.signIn("o-alice")
	o := h.buy(tok, sales.OrderRequest{Event: "live", Type: "floor", Tier: "std", Quantity: 1, Holders: []realname.Holder{{Name: "张小三", ID: idA}}})
	// Every answer masks; the database holds neither in the clear.
	for _, path := range []string{"/api/v1/orders", "/api/v1/tickets", "/api/v1/orders/" + o.No} {
		if b := h.do("GET", path, tok, nil).body; bytes.Contains(b, []byte(idA)) || bytes.Contains(b, []byte("张小三")) {
			t.Fatalf("%s shows the holder: %s", path, b)
		}
	}
	db := dbBytes(t, h)
	if bytes.Contains(db, []byte(idA)) || bytes.Contains(db, []byte("张小三")) || bytes.Contains(db, []byte("11010519491231")) {
		t.Fatal("sales.db holds the name or id number in the clear")
	}
	// Not yet due.
	h.clock.Set(h.cfg.Events[1].Ends.AddDate(0, 0, 3).Add(-time.Second))
	if n, err := h.s.PurgeRealNames(); err != nil || n != 0 {
		t.Fatalf("purged %d early (%v)", n, err)
	}
	h.clock.Add(time.Second)
	tok = h.signIn("o-alice")
	if n, err := h.s.PurgeRealNames(); err != nil || n != 2 { // the order's and the ticket's
		t.Fatalf("purged %d (%v), want 2", n, err)
	}
	if n, _ := h.s.PurgeRealNames(); n != 0 {
		t.Fatal("purged twice")
	}
	ts := h.tickets(tok)
	if len(ts) != 1 || ts[0].Holder != nil || ts[0].State != sales.TicketValid {
		t.Fatalf("after purge: %+v", ts)
	}
	tr, _ := h.st.Ticket(ts[0].ID)
	if len(tr.Holder.IDHash) != 0 || len(tr.Holder.Sealed) != 0 {
		t.Fatal("the ticket keeps its holder record")
	}
	if ord, _ := h.st.Order(o.No); len(ord.Holders) != 0 {
		t.Fatal("the order keeps its holder records")
	}
}

// dbBytes reads the database file as it is on disk (free pages too), or
// in PostgreSQL every key and value.
func dbBytes(t *testing.T, h *harness) []byte {
	t.Helper()
	if h.dbPath == "" {
		return storedBytes(t, h.st)
	}
	b, err := os.ReadFile(h.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
