package ticketpage

import (
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/verify"
)

// memTickets is an in-memory Tickets, so the fuzzer exercises the
// handler rather than fsync.
type memTickets struct {
	mu sync.Mutex
	t  centre.Ticket
}

func (m *memTickets) Ticket(id verify.TicketID) (*centre.Ticket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if id != m.t.ID {
		return nil, centre.ErrNoTicket
	}
	t := m.t
	return &t, nil
}

func (m *memTickets) ReissueWithDevice(id verify.TicketID, dev ed25519.PublicKey) (*centre.Ticket, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(dev) != ed25519.PublicKeySize {
		return nil, centre.ErrDeviceKey
	}
	m.t.Serial++
	m.t.DeviceKey = dev
	t := m.t
	return &t, nil
}

// FuzzBindDevice sends arbitrary bodies, content types and access
// secrets to POST /t/{id}/device: never a 5xx, JSON errors always, and a
// binding only for a valid secret and a 32-byte key.
func FuzzBindDevice(f *testing.F) {
	key := make([]byte, 32)
	tk := &memTickets{t: centre.Ticket{ID: verify.TicketID{1, 2, 3}, Event: "E", Serial: 1, DeviceKey: make([]byte, 32), Flags: verify.FlagDeviceKey}}
	h, err := New(tk, Options{Key: key, Token: "t", BindEvery: 1})
	if err != nil {
		f.Fatal(err)
	}
	mux := http.NewServeMux()
	h.Register(mux)
	good := h.Access(tk.t.ID)
	f.Add(good, "application/json", `{"public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`)
	f.Add(good, "application/json", `{"public_key":"AAAA"}`)
	f.Add("x", "application/json", `{}`)
	f.Add(good, "text/plain", `{"public_key":1}`)
	f.Add(good, "application/json; charset=utf-8", `{"public_key":"`+strings.Repeat("A", 44)+`"} trailing`)
	f.Fuzz(func(t *testing.T, k, ctype, body string) {
		before, _ := tk.Ticket(tk.t.ID)
		req := httptest.NewRequest("POST", "/t/"+tk.t.ID.String()+"/device?k="+url.QueryEscape(k), strings.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		after, _ := tk.Ticket(tk.t.ID)
		if w.Code >= 500 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		var ans map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil {
			t.Fatalf("%d: not JSON: %q", w.Code, w.Body)
		}
		if (w.Code == 200) != (after.Serial == before.Serial+1) {
			t.Fatalf("answer %d, serial %d -> %d", w.Code, before.Serial, after.Serial)
		}
		if w.Code == 200 && k != good {
			t.Fatalf("bound with secret %q", k)
		}
	})
}
