package sales_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/sales"
	"github.com/gated-dev/gated/wxpay"
	"github.com/gated-dev/gated/wxpay/wxpaytest"
)

// keyIssuer is an issuer that binds device keys, as the centre will; it
// records what it was asked.
type keyIssuer struct {
	mu   sync.Mutex
	keys map[string]ed25519.PublicKey
	n    int
}

func (k *keyIssuer) BindsDeviceKeys() bool { return true }

func (k *keyIssuer) Issue(_ context.Context, r sales.IssueRequest) ([]sales.IssuedTicket, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []sales.IssuedTicket
	for range r.Count {
		k.n++
		id := fmt.Sprintf("%032x", k.n)
		k.keys[id] = r.DeviceKey
		out = append(out, sales.IssuedTicket{ID: id, Serial: 1})
	}
	return out, nil
}

func (k *keyIssuer) Revoke(context.Context, string, string) error { return nil }

func (k *keyIssuer) Reissue(_ context.Context, id string, dev ed25519.PublicKey) (sales.IssuedTicket, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys[id] = dev
	return sales.IssuedTicket{ID: id, Serial: 2}, nil
}

func TestRotatingNeedsDeviceKeys(t *testing.T) {
	cfg := testConfig(time.Now())
	cfg.AppID, cfg.MchID = "wx1", "1900000109"
	cfg.Events[0].Rotating = true
	dir := t.TempDir()
	if err := centre.Init(filepath.Join(dir, "c"), nil); err != nil {
		t.Fatal(err)
	}
	c, err := centre.Open(filepath.Join(dir, "c"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := sales.OpenStore(filepath.Join(dir, "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pay := wxpaytest.NewPayServer(t)
	p, _ := wxpay.NewPay(context.Background(), pay.Config("https://x/n", ""))
	lc, _ := wxpay.NewLoginClient(wxpay.LoginConfig{AppID: "wx1", Secret: "s"})
	_, err = sales.NewServer(cfg, st, sales.CentreIssuer{C: c}, p, lc, nil)
	if err == nil || !strings.Contains(err.Error(), "device key") {
		t.Fatalf("a rotating event with an issuer that cannot bind device keys: %v", err)
	}
	if _, err := sales.NewServer(cfg, st, &keyIssuer{keys: map[string]ed25519.PublicKey{}}, p, lc, nil); err != nil {
		t.Fatal(err)
	}
}

func TestRotatingDeviceKeys(t *testing.T) {
	h := newHarness(t, nil)
	ki := &keyIssuer{keys: map[string]ed25519.PublicKey{}}
	// Rebuild the server with rotating codes and the key-binding issuer.
	h.cfg.Events[0].Rotating = true
	h.swapIssuer(ki)
	tok := h.signIn("o-alice")
	h.refused(h.do("POST", "/api/v1/orders", tok, gala), 400, "device_key_required")
	bad := gala
	bad.DeviceKey = base64.StdEncoding.EncodeToString([]byte("short"))
	h.refused(h.do("POST", "/api/v1/orders", tok, bad), 400, "device_key_required")
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	req := gala
	req.DeviceKey = base64.StdEncoding.EncodeToString(pub)
	o := h.buy(tok, req)
	if len(o.Tickets) != 2 {
		t.Fatalf("order %+v", o)
	}
	for _, tk := range o.Tickets {
		if !bytes.Equal(ki.keys[tk.ID], pub) {
			t.Fatalf("ticket %s bound to %x, want the phone's key", tk.ID, ki.keys[tk.ID])
		}
	}
	var offer sales.TransferOffer
	h.mustDo("POST", "/api/v1/tickets/"+o.Tickets[0].ID+"/transfer", tok, nil, 201, &offer)
	bob := h.signIn("o-bob")
	h.refused(h.do("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{}), 400, "device_key_required")
	pub2, _, _ := ed25519.GenerateKey(rand.Reader)
	var got sales.TicketView
	h.mustDo("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{DeviceKey: base64.StdEncoding.EncodeToString(pub2)}, 200, &got)
	if got.Serial != 2 || !bytes.Equal(ki.keys[got.ID], pub2) {
		t.Fatalf("transferred ticket %+v bound to %x", got, ki.keys[got.ID])
	}
}
