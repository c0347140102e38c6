package sales_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"github.com/gated-dev/gated/internal/lockedbuf"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/centretest"
	"github.com/gated-dev/gated/centre/sales"
	"github.com/gated-dev/gated/centre/wxpay"
	"github.com/gated-dev/gated/centre/wxpay/wxpaytest"
	"github.com/gated-dev/gated/verify"
)

// A valid resident id number (GB 11643 check character) and another.
const (
	idA = "11010519491231002X"
	idB = "110101199003070011"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func (c *clock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// countingIssuer passes calls to the real centre and counts them.
type countingIssuer struct {
	sales.Issuer
	issues, revokes, reissues atomic.Int32
	fail                      atomic.Bool
	loseReissue               atomic.Bool
	loseIssue                 atomic.Bool
}

func (c *countingIssuer) Issue(ctx context.Context, r sales.IssueRequest) ([]sales.IssuedTicket, error) {
	c.issues.Add(1)
	if c.fail.Load() {
		return nil, io.ErrUnexpectedEOF
	}
	its, err := c.Issuer.Issue(ctx, r)
	if err == nil && c.loseIssue.Load() {
		// Issued at the centre, but the answer is lost on the way back.
		return nil, io.ErrUnexpectedEOF
	}
	return its, err
}

func (c *countingIssuer) Reissue(ctx context.Context, id string, dev ed25519.PublicKey) (sales.IssuedTicket, error) {
	c.reissues.Add(1)
	it, err := c.Issuer.Reissue(ctx, id, dev)
	if err == nil && c.loseReissue.Load() {
		// Done at the centre, but the answer is lost on the way back.
		return sales.IssuedTicket{}, io.ErrUnexpectedEOF
	}
	return it, err
}

// SetHolder passes through to the centre when it can set holders.
func (c *countingIssuer) SetHolder(ctx context.Context, id, holder string) error {
	if hs, ok := c.Issuer.(sales.HolderSetter); ok {
		return hs.SetHolder(ctx, id, holder)
	}
	return nil
}

func (c *countingIssuer) Revoke(ctx context.Context, id, reason string) error {
	c.revokes.Add(1)
	if c.fail.Load() {
		return io.ErrUnexpectedEOF
	}
	return c.Issuer.Revoke(ctx, id, reason)
}

type harness struct {
	t      testing.TB
	clock  *clock
	cfg    sales.Config
	srv    *httptest.Server
	s      *sales.Server
	st     *sales.Store
	pay    *wxpaytest.PayServer
	login  *wxpaytest.LoginServer
	centre *centre.Centre
	iss    *countingIssuer
	logs   *lockedbuf.Buffer
	doors  time.Time
	dbPath string // the bbolt file; "" when the books are in PostgreSQL

	mux         atomic.Pointer[http.ServeMux]
	payClient   *wxpay.Pay
	loginClient *wxpay.LoginClient
}

func testConfig(now time.Time) sales.Config {
	doors := now.Add(10 * 24 * time.Hour).Truncate(time.Hour)
	return sales.Config{
		Events: []sales.Event{
			{ID: "gala", Name: "New Year Gala", DoorsOpen: doors, Ends: doors.Add(5 * time.Hour),
				Types: []sales.TicketType{{ID: "std", Name: "Standard", Tiers: []sales.Tier{
					{ID: "early", Name: "Early bird", Price: 8800, Quota: 10},
					{ID: "full", Name: "Full price", Price: 12800, Quota: 500},
				}}}},
			{ID: "live", Name: "Live House", DoorsOpen: doors, Ends: doors.Add(4 * time.Hour), RealName: true,
				Types: []sales.TicketType{{ID: "floor", Name: "Floor", Zone: "A", Tiers: []sales.Tier{
					{ID: "std", Name: "Standard", Price: 38000, Quota: 5},
				}}}},
		},
		HoldFor:         sales.Duration(15 * time.Minute),
		RealNameHMACKey: bytes.Repeat([]byte{7}, 32),
		RealNameKey:     bytes.Repeat([]byte{8}, 32),
	}
}

func newHarness(t testing.TB, mut func(*sales.Config)) *harness {
	t.Helper()
	return newHarnessAt(t, time.Now().UTC().Truncate(time.Second), mut)
}

// newHarnessAt starts the server's clock at start. WeChat Pay
// notifications keep the wall clock, which the SDK checks.
func newHarnessAt(t testing.TB, start time.Time, mut func(*sales.Config)) *harness {
	t.Helper()
	h := &harness{t: t, clock: &clock{t: start}, logs: &lockedbuf.Buffer{}}
	h.pay = wxpaytest.NewPayServer(t)
	h.login = wxpaytest.NewLoginServer(t, h.pay.AppID, "app-secret")
	dir := t.TempDir()
	c := centretest.New(t, filepath.Join(dir, "centre"))
	h.centre = c
	h.iss = &countingIssuer{Issuer: sales.CentreIssuer{C: c}}
	h.dbPath = filepath.Join(dir, "sales.db")
	st, onPG := openTestStore(t, h.dbPath)
	if onPG {
		h.dbPath = ""
	}
	t.Cleanup(func() { st.Close() })
	h.st = st
	h.cfg = testConfig(h.clock.Now())
	h.cfg.AppID, h.cfg.MchID = h.pay.AppID, h.pay.MchID
	h.cfg.Now = h.clock.Now
	if mut != nil {
		mut(&h.cfg)
	}
	h.doors = h.cfg.Events[0].DoorsOpen
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.mux.Load().ServeHTTP(w, r) }))
	t.Cleanup(h.srv.Close)
	// The pay client keeps the wall clock: the SDK checks notification
	// timestamps against it too.
	var err error
	h.payClient, err = wxpay.NewPay(context.Background(), h.pay.Config(h.srv.URL+"/api/v1/wxpay/notify", h.srv.URL+"/api/v1/wxpay/refund-notify"))
	if err != nil {
		t.Fatal(err)
	}
	h.loginClient, err = wxpay.NewLoginClient(wxpay.LoginConfig{AppID: h.pay.AppID, Secret: "app-secret", BaseURL: h.login.URL})
	if err != nil {
		t.Fatal(err)
	}
	h.swapIssuer(h.iss)
	return h
}

// swapIssuer builds the server anew around iss, on the same store and fakes.
func (h *harness) swapIssuer(iss sales.Issuer) {
	h.t.Helper()
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := sales.NewServer(h.cfg, h.st, iss, h.payClient, h.loginClient, log)
	if err != nil {
		h.t.Fatal(err)
	}
	mux := http.NewServeMux()
	s.Register(mux)
	h.s = s
	h.mux.Store(mux)
}

// signIn logs openid in through the API and returns the bearer token.
func (h *harness) signIn(openid string) string {
	h.t.Helper()
	var lr sales.LoginResponse
	h.mustDo("POST", "/api/v1/login", "", map[string]string{"code": h.login.Code(openid)}, 200, &lr)
	return lr.Token
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) errCode() string {
	var e sales.ErrorBody
	json.Unmarshal(a.body, &e)
	return e.Error
}

func (h *harness) do(method, path, token string, body any) answer {
	h.t.Helper()
	return h.doT(h.t, method, path, token, body)
}

// doT is do reporting to t (a fuzz run's own t).
func (h *harness) doT(t testing.TB, method, path, token string, body any) answer {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.srv.URL+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, b}
}

// mustDo checks the status and decodes the body into out.
func (h *harness) mustDo(method, path, token string, body any, status int, out any) answer {
	h.t.Helper()
	a := h.do(method, path, token, body)
	if a.status != status {
		h.t.Fatalf("%s %s: %d %s, want %d", method, path, a.status, a.body, status)
	}
	if a.status >= 400 {
		var e sales.ErrorBody
		if json.Unmarshal(a.body, &e) != nil || e.Error == "" || e.Message == "" {
			h.t.Fatalf("%s %s: refusal without error and message: %s", method, path, a.body)
		}
	}
	if out != nil {
		if err := json.Unmarshal(a.body, out); err != nil {
			h.t.Fatalf("%s %s: %v in %s", method, path, err, a.body)
		}
	}
	return a
}

// refused checks a refusal's status and code.
func (h *harness) refused(a answer, status int, code string) {
	h.t.Helper()
	var e sales.ErrorBody
	if a.status != status || json.Unmarshal(a.body, &e) != nil || e.Error != code || e.Message == "" {
		h.t.Fatalf("got %d %s, want %d with error %q and a message", a.status, a.body, status, code)
	}
}

func (h *harness) order(token string, req sales.OrderRequest) sales.OrderView {
	h.t.Helper()
	var o sales.OrderView
	h.mustDo("POST", "/api/v1/orders", token, req, 201, &o)
	return o
}

func (h *harness) prepay(token, no string) wxpay.RequestPayment {
	h.t.Helper()
	var rp wxpay.RequestPayment
	h.mustDo("POST", "/api/v1/orders/"+no+"/pay", token, nil, 200, &rp)
	return rp
}

// payAndNotify plays the buyer paying and WeChat Pay notifying.
func (h *harness) payAndNotify(no string) wxpaytest.Notification {
	h.t.Helper()
	res, err := h.pay.Pay(no)
	if err != nil {
		h.t.Fatal(err)
	}
	n := h.pay.Notify("TRANSACTION.SUCCESS", res, time.Now())
	if st, err := n.Send(h.srv.Client(), h.srv.URL+"/api/v1/wxpay/notify"); err != nil || st != 204 {
		h.t.Fatalf("payment notification: %d %v", st, err)
	}
	return n
}

// buy runs the whole purchase and returns the paid order.
func (h *harness) buy(token string, req sales.OrderRequest) sales.OrderView {
	h.t.Helper()
	o := h.order(token, req)
	h.prepay(token, o.No)
	h.payAndNotify(o.No)
	var got sales.OrderView
	h.mustDo("GET", "/api/v1/orders/"+o.No, token, nil, 200, &got)
	return got
}

func (h *harness) tickets(token string) []sales.TicketView {
	h.t.Helper()
	var ts []sales.TicketView
	h.mustDo("GET", "/api/v1/tickets", token, nil, 200, &ts)
	return ts
}

func (h *harness) remaining(event, typ, tier string) int {
	h.t.Helper()
	n, err := h.st.Remaining(event, typ, tier)
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

// gateDecision is what a gate with the centre's current bundle decides
// for a scanned code at doors-open time.
func (h *harness) gateDecision(event, code string) verify.Reason {
	h.t.Helper()
	data, err := h.centre.Export(event)
	if err != nil {
		h.t.Fatal(err)
	}
	b, trust, _, err := verify.OpenBundle(data, h.centre.RootPublic())
	if err != nil {
		h.t.Fatal(err)
	}
	tok, err := verify.Parse([]byte(code))
	if err != nil {
		h.t.Fatalf("parse %q: %v", code, err)
	}
	v := verify.NewVerifier(verify.Policy{Event: event}, trust)
	var f verify.Facts
	for i := range b.Tickets {
		if b.Tickets[i].ID == tok.Credential.Ticket {
			f.Entry = &b.Tickets[i]
		}
	}
	for i := range b.Revocations {
		if b.Revocations[i].ID == tok.Credential.Ticket {
			f.Revoked = &b.Revocations[i]
		}
	}
	return v.Decide(v.Check(tok, h.doors.Add(time.Minute), f.Entry), f).Reason
}

// gateHolder is the masked holder a gate's staff would see for a ticket.
func (h *harness) gateHolder(event, id string) string {
	h.t.Helper()
	data, err := h.centre.Export(event)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _, _, err := verify.OpenBundle(data, h.centre.RootPublic())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range b.Tickets {
		if e.ID.String() == id {
			return e.Holder
		}
	}
	return ""
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// jsonRaw is a request body sent as it is.
type jsonRaw []byte

func (j jsonRaw) MarshalJSON() ([]byte, error) {
	if !json.Valid(j) {
		return []byte(`"` + strings.ReplaceAll(strings.ReplaceAll(string(j), `\`, `\\`), `"`, `\"`) + `"`), nil
	}
	return j, nil
}
