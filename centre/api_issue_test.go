package centre

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/gated-dev/gated/verify"
)

// A sales system issues phone-bound tickets through the API, retries with
// the same idempotency key, and the phone signs codes the gate accepts.
func TestAPIIssuePhoneBound(t *testing.T) {
	c, _ := newCentre(t)
	srv, tok := serveAPI(t, c)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	post := func() []IssuedTicket {
		body, _ := json.Marshal(IssueBody{Count: 2, DeviceKey: pub, Holders: []string{"张*三 ****1234", "李*四 ****002X"}})
		req, _ := http.NewRequest("POST", srv.URL+"/api/v1/events/E/tickets", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Idempotency-Key", "order-42")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("status %d", resp.StatusCode)
		}
		var out []IssuedTicket
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	first, again := post(), post()
	if len(first) != 2 || len(again) != 2 || first[0].ID != again[0].ID || first[1].ID != again[1].ID {
		t.Fatalf("retry issued other tickets: %v / %v", first, again)
	}
	for _, it := range first {
		if it.Code != "" || len(it.Credential) == 0 {
			t.Fatalf("phone-bound ticket answered with code %q", it.Code)
		}
		code, err := verify.RotatingCode(it.Credential, priv, time.Now(), false)
		if err != nil {
			t.Fatal(err)
		}
		if r := check(t, c, code, time.Now()); r != verify.ReasonOK {
			t.Fatalf("the phone's code: %s", r)
		}
	}
}
