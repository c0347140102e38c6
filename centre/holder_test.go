package centre

import (
	"testing"

	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
)

// Masked holders reach gates: in the bundle, in the issue delta, and in a
// delta of their own when a transfer changes the holder.
func TestHoldersReachGates(t *testing.T) {
	c, _ := newCentre(t)
	if _, err := c.Issue(IssueRequest{Event: "E", Count: 2, Holders: []string{"张*三 ****1234"}}); err == nil {
		t.Fatal("one holder for two tickets was accepted")
	}
	ts, err := c.Issue(IssueRequest{Event: "E", Count: 2, Holders: []string{"张*三 ****1234", "李*四 ****002X"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetHolder(ts[1].ID, "王*五 ****5678"); err != nil {
		t.Fatal(err)
	}
	data, err := c.Export("E")
	if err != nil {
		t.Fatal(err)
	}
	b, _, _, err := verify.OpenBundle(data, c.RootPublic())
	if err != nil {
		t.Fatal(err)
	}
	got := map[verify.TicketID]string{}
	for _, e := range b.Tickets {
		got[e.ID] = e.Holder
	}
	if got[ts[0].ID] != "张*三 ****1234" || got[ts[1].ID] != "王*五 ****5678" {
		t.Fatalf("bundle holders: %v", got)
	}
	var ds []*wire.Delta
	c.Deltas(0, "E", func(d *wire.Delta) error { ds = append(ds, d); return nil })
	last := ds[len(ds)-1]
	if len(last.Tickets) != 1 || last.Tickets[0].Holder != "王*五 ****5678" {
		t.Fatalf("holder delta: %+v", last)
	}
	if _, err := c.SetHolder(ts[1].ID, string(make([]byte, 200))); err == nil {
		t.Fatal("an oversized holder was accepted")
	}
}

// An issue repeated with the same key returns the first call's tickets.
func TestIssueKeyIdempotent(t *testing.T) {
	c, _ := newCentre(t)
	first, err := c.Issue(IssueRequest{Event: "E", Count: 2, Key: "order-1"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Issue(IssueRequest{Event: "E", Count: 2, Key: "order-1"})
	if err != nil || len(again) != 2 || again[0].ID != first[0].ID || again[1].ID != first[1].ID {
		t.Fatalf("repeat: %v %v", again, err)
	}
	if _, err := c.Issue(IssueRequest{Event: "E", Count: 3, Key: "order-1"}); err == nil {
		t.Fatal("a key reused for another count was accepted")
	}
	other, err := c.Issue(IssueRequest{Event: "E", Count: 1, Key: "order-2"})
	if err != nil || other[0].ID == first[0].ID {
		t.Fatalf("new key: %v %v", other, err)
	}
	data, _ := c.Export("E")
	b, _, _, _ := verify.OpenBundle(data, c.RootPublic())
	if len(b.Tickets) != 3 {
		t.Fatalf("%d tickets at the gates, want 3", len(b.Tickets))
	}
}
