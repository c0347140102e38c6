package ticketpage

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/centretest"
	"github.com/gated-dev/gated/centre/ticketpage/headless"
	"github.com/gated-dev/gated/qr"
	"github.com/gated-dev/gated/verify"
)

type site struct {
	dir string
	c   *centre.Centre
	h   *Handler
	srv *httptest.Server
	tok string
}

// bindEvery is the tests' BindEvery: short, so a page may bind again.
var bindEvery = 50 * time.Millisecond

func newSite(t *testing.T) *site {
	t.Helper()
	dir := t.TempDir()
	c := centretest.New(t, dir)
	h, err := New(c, Options{Dir: dir, Token: "secret-token", BindEvery: bindEvery})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	s := &site{dir: dir, c: c, h: h, srv: httptest.NewServer(mux), tok: "secret-token"}
	t.Cleanup(s.srv.Close)
	return s
}

func (s *site) issue(t *testing.T, rotating bool) *centre.Ticket {
	t.Helper()
	ts, err := s.c.Issue(centre.IssueRequest{Event: "E", Count: 1, Rotating: rotating})
	if err != nil {
		t.Fatal(err)
	}
	return &ts[0]
}

func (s *site) do(t *testing.T, method, path, ctype, body string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, s.srv.URL+path, strings.NewReader(body))
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, string(b)
}

// gateCheck runs the gate's checks on a scanned code at now.
func (s *site) gateCheck(t *testing.T, code string, now time.Time) (*verify.Token, verify.Reason) {
	t.Helper()
	env, err := s.c.TrustList()
	if err != nil {
		t.Fatal(err)
	}
	tl, err := verify.OpenTrustList(env, s.c.RootPublic())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := verify.Parse([]byte(code))
	if err != nil {
		return nil, verify.ReasonMalformed
	}
	if r := verify.NewVerifier(verify.Policy{Event: "E"}, tl).Check(tok, now, nil).Result(); r != verify.Passed {
		return tok, r.Reason
	}
	return tok, verify.ReasonOK
}

func TestAccessAndErrors(t *testing.T) {
	s := newSite(t)
	st, rot := s.issue(t, false), s.issue(t, true)
	other := s.issue(t, false)
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	cases := []struct {
		name, method, path, ctype, body string
		hdr                             []string
		code                            int
		want                            string
	}{
		{"link without token", "GET", "/api/v1/tickets/" + st.ID.String() + "/link", "", "", nil, 401, "bearer token"},
		{"link of unknown ticket", "GET", "/api/v1/tickets/" + strings.Repeat("0", 24) + "/link", "", "", []string{"Authorization", "Bearer secret-token"}, 404, "no such ticket"},
		{"page without k", "GET", "/t/" + st.ID.String(), "", "", nil, 403, "k= part"},
		{"page with another ticket's k", "GET", "/t/" + st.ID.String() + "?k=" + s.h.Access(other.ID), "", "", nil, 403, "does not open"},
		{"page of a bad id", "GET", "/t/nothex?k=x", "", "", nil, 404, "incomplete"},
		{"static page", "GET", s.h.Path(st.ID), "", "", nil, 200, "/qr.png?k="},
		{"rotating page", "GET", s.h.Path(rot.ID), "", "", nil, 200, "ticket.js"},
		{"png of a rotating ticket", "GET", "/t/" + rot.ID.String() + "/qr.png?k=" + s.h.Access(rot.ID), "", "", nil, 409, "rotating"},
		{"bind without k", "POST", "/t/" + rot.ID.String() + "/device", "application/json", `{"public_key":"` + key + `"}`, nil, 403, "does not open"},
		{"bind a static ticket", "POST", "/t/" + st.ID.String() + "/device?k=" + s.h.Access(st.ID), "application/json", `{"public_key":"` + key + `"}`, nil, 409, "static"},
		{"bind as a form", "POST", "/t/" + rot.ID.String() + "/device?k=" + s.h.Access(rot.ID), "application/x-www-form-urlencoded", "public_key=x", nil, 415, "JSON"},
		{"bind a short key", "POST", "/t/" + rot.ID.String() + "/device?k=" + s.h.Access(rot.ID), "application/json", `{"public_key":"AAAA"}`, nil, 400, "32-byte"},
		{"bind with an unknown field", "POST", "/t/" + rot.ID.String() + "/device?k=" + s.h.Access(rot.ID), "application/json", `{"key":"AAAA"}`, nil, 400, "unknown field"},
		{"bind with trailing data", "POST", "/t/" + rot.ID.String() + "/device?k=" + s.h.Access(rot.ID), "application/json", `{"public_key":"` + key + `"} {}`, nil, 400, "nothing after it"},
		{"bind a huge body", "POST", "/t/" + rot.ID.String() + "/device?k=" + s.h.Access(rot.ID), "application/json", `{"public_key":"` + strings.Repeat("A", 5000) + `"}`, nil, 413, "4096"},
	}
	for _, c := range cases {
		code, body := s.do(t, c.method, c.path, c.ctype, c.body, c.hdr...)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s, want %d with %q", c.name, code, body, c.code, c.want)
		}
	}
	code, body := s.do(t, "GET", "/api/v1/tickets/"+st.ID.String()+"/link", "", "", "Authorization", "Bearer secret-token")
	var lr LinkResponse
	if code != 200 || json.Unmarshal([]byte(body), &lr) != nil || lr.Path != s.h.Path(st.ID) {
		t.Fatalf("link: %d %s", code, body)
	}
	if code, _ := s.do(t, "GET", lr.Path, "", "", ""); code != 200 {
		t.Fatalf("the link's page: %d", code)
	}
	// A key made before a restart is used again: links stay valid.
	h2, err := New(s.c, Options{Dir: s.dir, Token: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if h2.Path(st.ID) != s.h.Path(st.ID) {
		t.Fatal("the link changed when the key was loaded again")
	}
	// Nothing was re-issued by the refused requests.
	if tk, _ := s.c.Ticket(rot.ID); tk.Serial != 1 {
		t.Fatalf("refused binds changed the ticket: serial %d", tk.Serial)
	}
	// One binding per ticket per BindEvery (default 30 s).
	bind := `{"public_key":"` + key + `"}`
	path := "/t/" + rot.ID.String() + "/device?k=" + s.h.Access(rot.ID)
	slow, err := New(s.c, Options{Dir: s.dir, Token: "x"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	slow.Register(mux)
	slowSrv := httptest.NewServer(mux)
	defer slowSrv.Close()
	s2 := &site{srv: slowSrv}
	if code, body := s2.do(t, "POST", path, "application/json", bind); code != 200 || !strings.Contains(body, `"serial":2`) {
		t.Fatalf("first binding: %d %s", code, body)
	}
	if code, body := s2.do(t, "POST", path, "application/json", bind); code != 429 || !strings.Contains(body, "try again in 30 s") {
		t.Fatalf("second binding at once: %d %s", code, body)
	}
	if tk, _ := s.c.Ticket(rot.ID); tk.Serial != 2 {
		t.Fatalf("serial %d after one binding and one refusal", tk.Serial)
	}
}

func TestStaticPageInBrowser(t *testing.T) {
	s := newSite(t)
	tk := s.issue(t, false)
	b := headless.Start(t, nil)
	b.Navigate(s.srv.URL + s.h.Path(tk.ID))
	b.WaitFor(`document.getElementById("qr").complete && document.getElementById("qr").naturalWidth > 0`, 10*time.Second)
	got, err := qr.NewReader(nil).Decode(b.Screenshot())
	if err != nil {
		t.Fatalf("decode the page's screenshot: %v", err)
	}
	if got != tk.Code() {
		t.Fatalf("page shows %q, want the ticket's code %q", got, tk.Code())
	}
	if _, r := s.gateCheck(t, got, time.Now()); r != verify.ReasonOK {
		t.Fatalf("gate says %s", r)
	}
	// Without the centre the page and its code open from the phone's cache.
	b.WaitFor(`document.body.dataset.offline`, 10*time.Second)
	s.srv.Close()
	b.Navigate(s.srv.URL + s.h.Path(tk.ID))
	b.WaitFor(`document.getElementById("qr").complete && document.getElementById("qr").naturalWidth > 0`, 10*time.Second)
	if again, err := qr.NewReader(nil).Decode(b.Screenshot()); err != nil || again != tk.Code() {
		t.Fatalf("page opened offline shows %q, %v", again, err)
	}
}

// TestRotatingPageInBrowser: the page makes a key in the browser, the
// centre binds the ticket to it, and the page's codes pass the gate's
// checks, also when the centre is gone and after a reload.
func TestRotatingPageInBrowser(t *testing.T) {
	s := newSite(t)
	tk := s.issue(t, true)
	profile := t.TempDir()
	b := headless.Start(t, &headless.Options{Profile: profile})
	b.Navigate(s.srv.URL + s.h.Path(tk.ID))
	b.WaitFor(`document.getElementById("ticket").dataset.ready || document.getElementById("ticket").dataset.error`, 15*time.Second)
	var pageErr string
	b.Eval(`document.getElementById("ticket").dataset.error || ""`, &pageErr)
	if pageErr != "" {
		t.Fatalf("page: %s\n%s", pageErr, b.Logs())
	}
	bound, err := s.c.Ticket(tk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if bound.Serial != 2 || bytes.Equal(bound.DeviceKey, tk.DeviceKey) {
		t.Fatalf("after the page loaded: serial %d, device key %x (was %x)", bound.Serial, bound.DeviceKey, tk.DeviceKey)
	}
	scan := func() (string, *verify.Token) {
		t.Helper()
		code, err := qr.NewReader(nil).Decode(b.Screenshot())
		if err != nil {
			t.Fatalf("decode the page's screenshot: %v\n%s", err, b.Logs())
		}
		var shown string
		b.Eval(`document.getElementById("qr").dataset.code`, &shown)
		if code != shown {
			t.Fatalf("screenshot reads %q, the page says it shows %q", code, shown)
		}
		tok, r := s.gateCheck(t, code, time.Now())
		if r != verify.ReasonOK {
			t.Fatalf("gate says %s for %s", r, code)
		}
		if tok.Kind != verify.KindRotating || tok.Credential.Serial != 2 || !bytes.Equal(tok.Credential.DeviceKey, bound.DeviceKey) {
			t.Fatalf("code: kind %s serial %d device %x", tok.Kind, tok.Credential.Serial, tok.Credential.DeviceKey)
		}
		if v, _, _ := qr.Version(code); v > 11 {
			t.Fatalf("version %d", v)
		}
		return code, tok
	}
	firstCode, first := scan()
	if _, r := s.gateCheck(t, tk.Code(), time.Now()); r != verify.ReasonMalformed {
		t.Fatalf("the static form of the rotating ticket: %s, want malformed", r)
	}
	if _, r := s.gateCheck(t, firstCode, first.CodeTime.Add(31*time.Second)); r != verify.ReasonStaleCode {
		t.Fatalf("a code 31 s old: %s, want stale_code", r)
	}
	// The centre goes away; the page signs a new code by itself, and
	// opens again from the phone's cache.
	b.WaitFor(`document.body.dataset.offline`, 10*time.Second)
	var offline string
	b.Eval(`document.body.dataset.offline`, &offline)
	if offline != "ready" {
		t.Fatalf("offline cache: %s", offline)
	}
	addr := s.srv.Listener.Addr().String()
	s.srv.Close()
	time.Sleep(1100 * time.Millisecond)
	b.Eval(`document.dispatchEvent(new Event("visibilitychange"))`, nil)
	b.WaitFor(`Number(document.getElementById("qr").dataset.t) > `+strconv.FormatInt(first.CodeTime.Unix(), 10), 5*time.Second)
	_, second := scan()
	if !second.CodeTime.After(first.CodeTime) {
		t.Fatalf("offline refresh: code time %s, first %s", second.CodeTime, first.CodeTime)
	}
	time.Sleep(1100 * time.Millisecond)
	b.Navigate(s.srv.URL + s.h.Path(tk.ID))
	b.WaitFor(`document.getElementById("ticket").dataset.ready || document.getElementById("ticket").dataset.error`, 15*time.Second)
	_, third := scan()
	if !third.CodeTime.After(second.CodeTime) {
		t.Fatalf("page opened offline: code time %s, before %s", third.CodeTime, second.CodeTime)
	}
	// A new browser on the same profile keeps the key: no new binding.
	// (IndexedDB belongs to the origin: the centre comes back on its port.)
	b.Close()
	mux := http.NewServeMux()
	s.h.Register(mux)
	s.srv = httptest.NewUnstartedServer(mux)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s.srv.Listener.Close()
	s.srv.Listener = ln
	s.srv.Start()
	defer s.srv.Close()
	b = headless.Start(t, &headless.Options{Profile: profile})
	b.Navigate(s.srv.URL + s.h.Path(tk.ID))
	b.WaitFor(`document.getElementById("ticket").dataset.ready || document.getElementById("ticket").dataset.error`, 15*time.Second)
	scan()
	if again, _ := s.c.Ticket(tk.ID); again.Serial != 2 {
		t.Fatalf("a reload bound the ticket again: serial %d", again.Serial)
	}
	// Moved to another phone: the page says so and can take it back.
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := s.c.ReissueWithDevice(tk.ID, other); err != nil {
		t.Fatal(err)
	}
	b.Navigate(s.srv.URL + s.h.Path(tk.ID))
	b.WaitFor(`!document.getElementById("move").hidden`, 10*time.Second)
	b.Eval(`document.getElementById("move").click()`, nil)
	b.WaitFor(`document.getElementById("move").hidden`, 10*time.Second)
	back, _ := s.c.Ticket(tk.ID)
	if back.Serial != 4 || bytes.Equal(back.DeviceKey, other) {
		t.Fatalf("after taking it back: serial %d", back.Serial)
	}
	code, err := qr.NewReader(nil).Decode(b.Screenshot())
	if err != nil {
		t.Fatal(err)
	}
	if tok, r := s.gateCheck(t, code, time.Now()); r != verify.ReasonOK || tok.Credential.Serial != 4 {
		t.Fatalf("code after taking it back: %s", r)
	}
}
