package centre

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gated-dev/gated/verify"
)

// check runs the gate's stateless checks on a scanned code.
func check(t *testing.T, c *Centre, code string, now time.Time) verify.Reason {
	t.Helper()
	env, err := c.TrustList()
	if err != nil {
		t.Fatal(err)
	}
	tl, err := verify.OpenTrustList(env, c.RootPublic())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := verify.Parse([]byte(code))
	if err != nil {
		return verify.ReasonMalformed
	}
	if r := verify.NewVerifier(verify.Policy{Event: "E"}, tl).Check(tok, now, nil).Result(); r != verify.Passed {
		return r.Reason
	}
	return verify.ReasonOK
}

func TestIssueWithDeviceKey(t *testing.T) {
	c, _ := newCentre(t)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ts, err := c.Issue(IssueRequest{Event: "E", Count: 2, DeviceKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, tk := range ts {
		if !bytes.Equal(tk.DeviceKey, pub) || tk.Flags&verify.FlagDeviceKey == 0 {
			t.Fatalf("ticket %s: device key %x flags %b", tk.ID, tk.DeviceKey, tk.Flags)
		}
		code, err := verify.RotatingCode(tk.Credential, priv, now, false)
		if err != nil {
			t.Fatal(err)
		}
		if r := check(t, c, code, now); r != verify.ReasonOK {
			t.Fatalf("phone's code: %s", r)
		}
		if r := check(t, c, tk.Code(), now); r != verify.ReasonMalformed {
			t.Fatalf("static form of a device-bound ticket: %s, want malformed", r)
		}
	}
	if _, err := os.Stat(filepath.Join(c.dir, DevicesDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the centre kept device keys for a phone-bound ticket: %v", err)
	}
	for _, bad := range []IssueRequest{
		{Event: "E", Count: 1, DeviceKey: pub[:31]},
		{Event: "E", Count: 1, DeviceKey: pub, Rotating: true},
	} {
		if _, err := c.Issue(bad); err == nil {
			t.Fatalf("issue with device key of %d bytes, rotating %v: no error", len(bad.DeviceKey), bad.Rotating)
		}
	}
}

func TestReissueWithDevice(t *testing.T) {
	c, _ := newCentre(t)
	ts, err := c.Issue(IssueRequest{Event: "E", Count: 2, Rotating: true})
	if err != nil {
		t.Fatal(err)
	}
	static, err := c.Issue(IssueRequest{Event: "E", Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	for _, old := range []Ticket{ts[0], static[0]} {
		got, err := c.ReissueWithDevice(old.ID, pub)
		if err != nil {
			t.Fatal(err)
		}
		if got.Serial != old.Serial+1 || !bytes.Equal(got.DeviceKey, pub) {
			t.Fatalf("re-issued %s: serial %d (was %d), device key %x", got.ID, got.Serial, old.Serial, got.DeviceKey)
		}
		if stored, _ := c.Ticket(old.ID); !bytes.Equal(stored.Credential, got.Credential) {
			t.Fatal("the stored ticket is not the re-issued one")
		}
		code, err := verify.RotatingCode(got.Credential, priv, now, false)
		if err != nil {
			t.Fatal(err)
		}
		if r := check(t, c, code, now); r != verify.ReasonOK {
			t.Fatalf("phone's code after re-issue: %s", r)
		}
		tok, _ := verify.Parse([]byte(code))
		if tok.Credential.Serial != old.Serial+1 {
			t.Fatalf("code carries serial %d", tok.Credential.Serial)
		}
	}
	// The centre no longer plays the phone of the re-bound ticket.
	if _, err := c.Present(ts[0].ID, now, false); err == nil {
		t.Fatal("Present still signs for a ticket moved to a phone")
	}
	if _, err := c.Present(ts[1].ID, now, false); err != nil {
		t.Fatalf("another rotating ticket: %v", err)
	}
	if _, err := c.ReissueWithDevice(ts[1].ID, pub[:16]); !errors.Is(err, ErrDeviceKey) {
		t.Fatalf("short key: %v", err)
	}
	var unknown verify.TicketID
	if _, err := c.ReissueWithDevice(unknown, pub); !errors.Is(err, ErrNoTicket) {
		t.Fatalf("unknown ticket: %v", err)
	}
}
