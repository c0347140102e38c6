package dashboard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/centretest"
	"github.com/gated-dev/gated/centre/ticketpage/headless"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	"github.com/gated-dev/gated/wire/wiretest"
)

const token = "test-token"

type site struct {
	c   *centre.Centre
	d   *Dashboard
	srv *httptest.Server
}

func newSite(t *testing.T) *site {
	t.Helper()
	dir := t.TempDir()
	c := centretest.New(t, dir)
	d, err := New(c, Options{Token: token, Every: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go d.Run(ctx)
	mux := http.NewServeMux()
	d.Register(mux)
	s := &site{c: c, d: d, srv: httptest.NewServer(mux)}
	t.Cleanup(func() { cancel(); <-d.done; s.srv.Close() })
	return s
}

// ingest stores one entry of gate g as the sync server would.
func (s *site) ingest(t *testing.T, g string, seq uint64, tk verify.TicketID, verdict string) {
	t.Helper()
	code := ""
	if tc, err := s.c.Ticket(tk); err == nil {
		code = tc.Code() // the centre books an admission as a use only with its code
	}
	b := wiretest.Batch(t, wire.Batch{Gate: g, Instance: g + ".i"}, []uint64{seq}, func(seq uint64) map[string]any {
		e := wiretest.Entry(g, g+".i", seq, verdict, "ok", tk, time.Now().UTC())
		e["code"] = code
		return e
	})
	if _, err := s.c.Ingest("arena", b); err != nil {
		t.Fatal(err)
	}
}

func (s *site) get(t *testing.T, path string, hdr ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", s.srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Body.Close() })
	return r
}

func TestAccess(t *testing.T) {
	s := newSite(t)
	for _, tc := range []struct {
		path string
		hdr  []string
		code int
	}{
		{"/dashboard/", nil, 401},
		{"/dashboard/?token=wrong", nil, 401},
		{"/dashboard/events", nil, 401},
		{"/dashboard/state.json", []string{"Authorization", "Bearer wrong"}, 401},
		{"/dashboard/state.json", []string{"Cookie", cookieName + "=" + token}, 401}, // the token is not the cookie
		{"/dashboard/state.json", []string{"Authorization", "Bearer " + token}, 200},
		{"/dashboard/", []string{"Authorization", "Bearer " + token}, 200},
		{"/dashboard/assets/dashboard.js", nil, 200},
	} {
		if r := s.get(t, tc.path, tc.hdr...); r.StatusCode != tc.code {
			b, _ := io.ReadAll(r.Body)
			t.Errorf("GET %s %v: %d %s, want %d", tc.path, tc.hdr, r.StatusCode, b, tc.code)
		}
	}
	r := s.get(t, "/dashboard/?token="+token)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/dashboard/" || len(r.Cookies()) != 1 {
		t.Fatalf("token login: %d, location %q, cookies %v", r.StatusCode, r.Header.Get("Location"), r.Cookies())
	}
	ck := r.Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || strings.Contains(ck.Value, token) {
		t.Fatalf("cookie %+v", ck)
	}
	if r := s.get(t, "/dashboard/events", "Cookie", ck.Name+"="+ck.Value); r.StatusCode != 200 || r.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events with the cookie: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
}

// TestLiveInBrowser: entries, conflicts and a gate going offline reach an
// open page without a reload.
func TestLiveInBrowser(t *testing.T) {
	s := newSite(t)
	ts, err := s.c.Issue(centre.IssueRequest{Event: "E", Count: 2})
	if err != nil {
		t.Fatal(err)
	}
	s.c.GateStatus("arena", &wire.Status{Gate: "g1", Online: true, Event: "E", Outbox: 3, ClockOffsetMs: 40})
	s.c.GateStatus("arena", &wire.Status{Gate: "g2", Online: true, Event: "E", ClockOffsetMs: -4500})
	b := headless.Start(t, &headless.Options{Width: 1400, Height: 900})
	b.Navigate(s.srv.URL + "/dashboard/?token=" + token)
	var path string
	b.Eval("location.pathname + location.search", &path)
	if path != "/dashboard/" {
		t.Fatalf("after the token login the page is at %q", path)
	}
	b.WaitFor(`document.querySelector('tr[data-gate="arena/g1"]')`, 5*time.Second)
	b.WaitFor(`[...document.querySelectorAll("#alerts li")].some(li => li.dataset.gate === "arena/g2" && li.textContent.includes("clock 4.5s off"))`, 2*time.Second)

	start := time.Now()
	s.ingest(t, "g1", 1, ts[0].ID, "admit")
	b.WaitFor(`document.querySelector('tr[data-gate="arena/g1"]').dataset.admitted === "1"`, 2*time.Second)
	t.Logf("an admission reached the page in %s", time.Since(start).Round(time.Millisecond))
	var bars string
	b.Eval(`document.querySelector('tr[data-gate="arena/g1"] .bars').title`, &bars)
	if !strings.HasSuffix(bars, " 1") {
		t.Fatalf("entries a minute: %q, want the last minute at 1", bars)
	}

	s.ingest(t, "g2", 1, ts[0].ID, "admit") // the same ticket at another gate
	b.WaitFor(`document.querySelectorAll("#conflicts tbody tr").length === 1`, 2*time.Second)
	b.WaitFor(`[...document.querySelectorAll("#alerts li.critical")].some(li => li.textContent.includes("admitted twice"))`, 2*time.Second)

	s.c.GateStatus("arena", &wire.Status{Gate: "g1", Online: false})
	b.WaitFor(`document.querySelector('tr[data-gate="arena/g1"] td:nth-child(3)').textContent === "offline"`, 2*time.Second)
	var updates string
	b.Eval(`document.body.dataset.updates`, &updates)
	if updates == "" || updates == "1" {
		t.Fatalf("the page was updated %q times: it must update in place", updates)
	}
}
