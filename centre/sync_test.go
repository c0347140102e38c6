package centre

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	"github.com/gated-dev/gated/wire/wiretest"
)

func newCentre(t testing.TB) (*Centre, string) {
	t.Helper()
	dir := t.TempDir()
	if err := Init(dir, nil); err != nil {
		t.Fatal(err)
	}
	c, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, dir
}

// batch builds a parsed batch of gate g's entries with the given seqs;
// admits name ticket tk and carry its code.
func batch(t testing.TB, g, instance string, tk *Ticket, verdict string, seqs ...uint64) *wire.ParsedBatch {
	t.Helper()
	return batchCode(t, g, instance, tk.ID, tk.Code(), verdict, seqs...)
}

// batchCode is batch with the scanned code given.
func batchCode(t testing.TB, g, instance string, tk verify.TicketID, code, verdict string, seqs ...uint64) *wire.ParsedBatch {
	t.Helper()
	return wiretest.Batch(t, wire.Batch{Gate: g, Instance: instance}, seqs, func(s uint64) map[string]any {
		e := wiretest.Entry(g, instance, s, verdict, "ok", tk, time.Now().UTC())
		e["code"] = code
		return e
	})
}

func TestIngestExactlyOnce(t *testing.T) {
	c, _ := newCentre(t)
	ts, err := c.Issue(IssueRequest{Event: "E", Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                 string
		b                    *wire.ParsedBatch
		new, dup             int
		storedTo             uint64
		conflicts, conflictN int
	}{
		{"first", batch(t, "g1", "i1", &ts[0], "deny", 1, 2, 3), 3, 0, 3, 0, 0},
		{"resent", batch(t, "g1", "i1", &ts[0], "deny", 1, 2, 3), 0, 3, 3, 0, 0},
		{"overlap", batch(t, "g1", "i1", &ts[0], "deny", 3, 4), 1, 1, 4, 0, 0},
		{"out of order leaves a gap", batch(t, "g1", "i1", &ts[0], "deny", 7, 8), 2, 0, 4, 0, 0},
		{"gap filled", batch(t, "g1", "i1", &ts[0], "deny", 5, 6), 2, 0, 8, 0, 0},
		{"new store instance restarts seqs", batch(t, "g1", "i2", &ts[1], "admit", 1), 1, 0, 1, 0, 0},
		{"same ticket at another gate", batch(t, "g2", "i3", &ts[1], "admit", 1), 1, 0, 1, 1, 1},
		{"and again at the first", batch(t, "g1", "i2", &ts[1], "admit", 2), 1, 0, 2, 1, 2},
		{"replay of the conflicting entry", batch(t, "g2", "i3", &ts[1], "admit", 1), 0, 1, 1, 0, 2},
	} {
		res, err := c.Ingest("v", tc.b)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if res.New != tc.new || res.Duplicate != tc.dup || res.StoredTo != tc.storedTo || len(res.Conflicts) != tc.conflicts {
			t.Errorf("%s: %+v", tc.name, res)
		}
		if cs, _ := c.Conflicts(); len(cs) != tc.conflictN {
			t.Errorf("%s: %d conflicts recorded", tc.name, len(cs))
		}
	}
	es, _ := c.Entries(0, 1000)
	if len(es) != 11 {
		t.Fatalf("%d entries", len(es))
	}
	cs, _ := c.Conflicts()
	if cs[0].Kind != "two_gates" || cs[1].Kind != "twice" {
		t.Errorf("conflict kinds: %+v", cs)
	}
}

func TestDeltaLog(t *testing.T) {
	c, _ := newCentre(t)
	ts, _ := c.Issue(IssueRequest{Event: "E", Count: 2})
	c.Issue(IssueRequest{Event: "F", Count: 1})
	c.Revoke(ts[0].ID, "refund")
	c.Revoke(ts[0].ID, "again") // no change, no delta
	c.AddIssuerKey(time.Time{})
	var ds []*wire.Delta
	c.Deltas(0, "E", func(d *wire.Delta) error { ds = append(ds, d); return nil })
	if len(ds) != 3 || len(ds[0].Tickets) != 2 || len(ds[1].Revocations) != 1 || ds[2].TrustList == nil {
		t.Fatalf("deltas of E: %+v", ds)
	}
	for i := 1; i < len(ds); i++ {
		if ds[i].Prev != ds[i-1].Version {
			t.Errorf("delta %d: prev %d, previous version %d", i, ds[i].Prev, ds[i-1].Version)
		}
	}
	sn, err := c.Snapshot("E", 64)
	if err != nil || sn.Tickets != 2 || sn.Revocations != 1 || len(sn.Chunks) < 2 {
		t.Fatalf("snapshot: %+v %v", sn, err)
	}
}

// serveAPI serves c's HTTP API for the test; it returns the server and
// the API token Init wrote.
func serveAPI(t testing.TB, c *Centre) (*httptest.Server, string) {
	t.Helper()
	tok, err := ReadAPIToken(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewAPI(c, tok, nil))
	t.Cleanup(srv.Close)
	return srv, tok
}

// apiStatus sends method path with body, and with token as the bearer
// token unless it is "", and returns the response's status.
func apiStatus(t testing.TB, url, method, path, token, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	return r.StatusCode
}

func TestAPIAuth(t *testing.T) {
	c, _ := newCentre(t)
	srv, tok := serveAPI(t, c)
	for _, tc := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"GET", "/healthz", "", "", 200},
		{"GET", "/api/v1/gates", "", "", 401},
		{"GET", "/api/v1/gates", "wrong", "", 401},
		{"GET", "/api/v1/gates", tok, "", 200},
		{"GET", "/api/v1/entries?since=x", tok, "", 400},
		{"GET", "/api/v1/entries?since=0", tok, "", 200},
		{"GET", "/api/v1/conflicts", tok, "", 200},
		{"POST", "/api/v1/events/E/tickets", tok, `{"count":2}`, 201},
		{"POST", "/api/v1/events/E/tickets", tok, `{"count":0}`, 400},
		{"POST", "/api/v1/events/E/tickets", tok, `{"cont":2}`, 400},
		{"POST", "/api/v1/events/E/tickets", "", `{"count":2}`, 401},
		{"POST", "/api/v1/tickets/zz/revoke", tok, `{}`, 400},
		{"POST", "/api/v1/tickets/000000000000000000000000/revoke", tok, `{}`, 404},
	} {
		if got := apiStatus(t, srv.URL, tc.method, tc.path, tc.token, tc.body); got != tc.want {
			t.Errorf("%s %s (token %q): %d, want %d", tc.method, tc.path, tc.token, got, tc.want)
		}
	}
}

func TestGateUsersAndACL(t *testing.T) {
	c, _ := newCentre(t)
	pw, err := c.AddGateUser("v", "g1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddGateUser("w", "g1"); err == nil {
		t.Error("gate id reused at another venue")
	}
	if v, ok := c.CheckGateUser("g1", pw); !ok || v != "v" {
		t.Error("right password refused")
	}
	if _, ok := c.CheckGateUser("g1", pw+"x"); ok {
		t.Error("wrong password accepted")
	}
	for _, tc := range []struct {
		topic         string
		write, wantOK bool
	}{
		{"gated/v1/v/g1/entries", true, true},
		{"gated/v1/v/g2/entries", true, false},
		{"gated/v1/v/whitelist", true, false},
		{"gated/v1/v/g1/ack", true, false},
		{"gated/v1/v/g1/ack", false, true},
		{"gated/v1/v/g2/ack", false, false},
		{"gated/v1/v/live", false, true},
		{"gated/v1/w/live", false, false},
		{"gated/v1/#", false, false},
	} {
		ok := GateMayRead("v", "g1", tc.topic)
		if tc.write {
			ok = GateMayWrite("v", "g1", tc.topic)
		}
		if ok != tc.wantOK {
			t.Errorf("%s write=%v: %v", tc.topic, tc.write, ok)
		}
	}
}
