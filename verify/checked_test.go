package verify

import (
	"crypto/ed25519"
	"reflect"
	"testing"
	"time"
)

// Decide takes a Checked, not a Token: deciding a token Check never saw
// does not compile.
var _ func(*Verifier, *Checked, Facts) Result = (*Verifier).Decide

// TestDecideNeedsCheck: a Checked that Check did not make, or that did not
// pass, is never admitted.
func TestDecideNeedsCheck(t *testing.T) {
	f := newFixture()
	v := NewVerifier(Policy{Event: "expo"}, f.trust)
	for name, ck := range map[string]*Checked{"nil": nil, "zero": {}} {
		if r := v.Decide(ck, Facts{}); r.Reason != ReasonMalformed {
			t.Errorf("%s Checked: decided %s (%s), want %s", name, r.Reason, r.Detail, ReasonMalformed)
		}
	}
	tok, err := Parse([]byte(f.static(t, f.cred(nil), f.other)))
	if err != nil {
		t.Fatal(err)
	}
	ck := v.Check(tok, f.now, nil)
	if ck.Passed() {
		t.Fatal("a code signed by an untrusted key passed")
	}
	if r := v.Decide(ck, Facts{}); r.Reason != ReasonBadSignature {
		t.Errorf("failed check decided %s, want its own %s", r.Reason, ReasonBadSignature)
	}
}

// TestCheckLeavesToken: Check completes a short rotating code's credential
// from the whitelist in what it returns, never in the caller's token.
func TestCheckLeavesToken(t *testing.T) {
	f := newFixture()
	tok, err := Parse([]byte(f.rotating(t, f.cred(func(c *Credential) { c.Zone = "VIP" }), f.now, true)))
	if err != nil {
		t.Fatal(err)
	}
	before := *tok
	e := &TicketEntry{ID: tok.Credential.Ticket, Serial: 1, Flags: FlagDeviceKey | FlagReentry, Zone: "VIP",
		NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(time.Hour), DeviceKey: f.device.Public().(ed25519.PublicKey)}
	ck := NewVerifier(Policy{Event: "expo"}, f.trust).Check(tok, f.now, e)
	if r := ck.Result(); r != Passed {
		t.Fatalf("check: %s (%s)", r.Reason, r.Detail)
	}
	if !reflect.DeepEqual(*tok, before) {
		t.Errorf("Check changed the token: %+v, was %+v", tok.Credential, before.Credential)
	}
	c := ck.Credential()
	if c.Zone != "VIP" || c.Event != TagOf("expo") || c.Flags != e.Flags || !c.DeviceKey.Equal(e.DeviceKey) {
		t.Errorf("checked credential not completed from the whitelist: %+v", c)
	}
	if ck.Kind() != KindRotatingShort || !ck.CodeTime().Equal(f.now) {
		t.Errorf("checked kind %s, code time %s", ck.Kind(), ck.CodeTime())
	}
}
