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
	"github.com/gated-dev/gated/centre/centretest"
	"github.com/gated-dev/gated/centre/sales"
	"github.com/gated-dev/gated/centre/wxpay"
	"github.com/gated-dev/gated/centre/wxpay/wxpaytest"
	"github.com/gated-dev/gated/verify"
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
	c := centretest.New(t, filepath.Join(dir, "c"))
	st, err := sales.OpenStore(filepath.Join(dir, "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pay := wxpaytest.NewPayServer(t)
	p, _ := wxpay.NewPay(context.Background(), pay.Config("https://x/n", ""))
	lc, _ := wxpay.NewLoginClient(wxpay.LoginConfig{AppID: "wx1", Secret: "s"})
	// An issuer without the capability (countingIssuer hides it).
	_, err = sales.NewServer(cfg, st, &countingIssuer{Issuer: sales.CentreIssuer{C: c}}, p, lc, nil)
	if err == nil || !strings.Contains(err.Error(), "device key") {
		t.Fatalf("a rotating event with an issuer that cannot bind device keys: %v", err)
	}
	for _, iss := range []sales.Issuer{&keyIssuer{keys: map[string]ed25519.PublicKey{}}, sales.CentreIssuer{C: c}} {
		if _, err := sales.NewServer(cfg, st, iss, p, lc, nil); err != nil {
			t.Fatalf("%T: %v", iss, err)
		}
	}
}

// TestRotatingCentreBindsDeviceKeys buys and transfers rotating tickets
// through the real centre: each is bound to the phone's key, and the
// phone's codes pass the gate's checks.
func TestRotatingCentreBindsDeviceKeys(t *testing.T) {
	h := newHarness(t, nil)
	h.cfg.Events[0].Rotating = true
	h.swapIssuer(sales.CentreIssuer{C: h.centre})
	tok := h.signIn("o-alice")
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	req := gala
	req.DeviceKey = base64.StdEncoding.EncodeToString(pub)
	o := h.buy(tok, req)
	if len(o.Tickets) != 2 {
		t.Fatalf("order %+v", o)
	}
	phoneCode := func(id string, dev ed25519.PrivateKey) (*centre.Ticket, *verify.Token) {
		t.Helper()
		tid, err := verify.ParseTicketID(id)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := h.centre.Ticket(tid)
		if err != nil {
			t.Fatal(err)
		}
		code, err := verify.RotatingCode(ct.Credential, dev, time.Now(), false)
		if err != nil {
			t.Fatalf("ticket %s: the phone cannot present it: %v", id, err)
		}
		tk, err := verify.Parse([]byte(code))
		if err != nil {
			t.Fatal(err)
		}
		if !ed25519.Verify(ct.DeviceKey, verify.RotatingMessage(tk.Credential.Event, tk.Credential.Ticket, tk.Credential.Serial,
			uint32(tk.CodeTime.Unix())), tk.DeviceSig) {
			t.Fatalf("ticket %s: the phone's signature does not verify with the bound key", id)
		}
		return ct, tk
	}
	for _, tk := range o.Tickets {
		if tk.Code != "" {
			t.Fatalf("rotating ticket %s has a static code %q", tk.ID, tk.Code)
		}
		// The mini program gets the credential and signs codes the gate admits.
		code, err := verify.RotatingCode(tk.Credential, priv, h.doors.Add(time.Minute), false)
		if err != nil {
			t.Fatalf("ticket %s: credential handed to the phone: %v", tk.ID, err)
		}
		if r := h.gateDecision(gala.Event, code); r != verify.ReasonOK {
			t.Fatalf("ticket %s: the phone's own code: %s", tk.ID, r)
		}
		ct, _ := phoneCode(tk.ID, priv)
		if !bytes.Equal(ct.DeviceKey, pub) || ct.Serial != 1 {
			t.Fatalf("ticket %s: serial %d, device key %x, want the phone's", tk.ID, ct.Serial, ct.DeviceKey)
		}
	}
	var offer sales.TransferOffer
	h.mustDo("POST", "/api/v1/tickets/"+o.Tickets[0].ID+"/transfer", tok, nil, 201, &offer)
	bob := h.signIn("o-bob")
	pub2, priv2, _ := ed25519.GenerateKey(rand.Reader)
	var got sales.TicketView
	h.mustDo("POST", "/api/v1/transfers/"+offer.Code+"/accept", bob, sales.AcceptRequest{DeviceKey: base64.StdEncoding.EncodeToString(pub2)}, 200, &got)
	ct, tk := phoneCode(got.ID, priv2)
	if got.Serial != 2 || ct.Serial != 2 || tk.Credential.Serial != 2 || !bytes.Equal(ct.DeviceKey, pub2) {
		t.Fatalf("transferred ticket %+v: centre serial %d, device key %x", got, ct.Serial, ct.DeviceKey)
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
