package verify

import (
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

type fixture struct {
	issuer, other, device ed25519.PrivateKey
	trust                 *TrustList
	now                   time.Time
}

func newFixture() *fixture {
	f := &fixture{
		issuer: ed25519.NewKeyFromSeed(make([]byte, 32)),
		other:  ed25519.NewKeyFromSeed([]byte(strings.Repeat("x", 32))),
		device: ed25519.NewKeyFromSeed([]byte(strings.Repeat("d", 32))),
		now:    time.Date(2026, 12, 31, 20, 0, 0, 0, time.UTC),
	}
	f.trust = &TrustList{Keys: []IssuerKey{{KeyID: 1, PublicKey: f.issuer.Public().(ed25519.PublicKey)}}}
	return f
}

func (f *fixture) cred(mod func(*Credential)) *Credential {
	c := &Credential{KeyID: 1, Ticket: TicketID{1, 2, 3}, Event: TagOf("expo"), Serial: 1,
		NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(time.Hour)}
	if mod != nil {
		mod(c)
	}
	return c
}

func (f *fixture) static(t testing.TB, c *Credential, key ed25519.PrivateKey) string {
	b, err := c.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	return StaticCode(b)
}

func (f *fixture) rotating(t testing.TB, c *Credential, at time.Time, short bool) string {
	c.Flags |= FlagDeviceKey
	c.DeviceKey = f.device.Public().(ed25519.PublicKey)
	b, err := c.Sign(f.issuer)
	if err != nil {
		t.Fatal(err)
	}
	s, err := RotatingCode(b, f.device, at, short)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// flip changes one Base45 character at position i of a code, keeping it valid Base45.
func flip(code string, i int) string {
	b := []byte(code)
	if b[i] == '0' {
		b[i] = '1'
	} else {
		b[i] = '0'
	}
	return string(b)
}

func TestCheckAndDecide(t *testing.T) {
	f := newFixture()
	good := f.static(t, f.cred(nil), f.issuer)
	use := &Use{Seq: 7, At: f.now.Add(-time.Minute), Gate: "north-1"}
	entry := &TicketEntry{ID: TicketID{1, 2, 3}, Serial: 1}
	for _, tc := range []struct {
		name   string
		code   string
		policy Policy
		facts  Facts
		want   Reason
		detail string
	}{
		{name: "valid", code: good, want: ReasonOK},
		{name: "lower case from a wedge scanner", code: strings.ToLower(good), want: ReasonOK},
		{name: "garbage", code: "hello world", want: ReasonMalformed},
		{name: "truncated", code: good[:len(good)-6], want: ReasonMalformed},
		{name: "tampered signature", code: flip(good, len(good)-5), want: ReasonBadSignature},
		{name: "tampered serial", code: flip(good, 3+36+1), want: ReasonBadSignature},
		{name: "other issuer with our key id", code: f.static(t, f.cred(nil), f.other), want: ReasonBadSignature},
		{name: "unknown key id", code: f.static(t, f.cred(func(c *Credential) { c.KeyID = 9 }), f.other), want: ReasonUnknownKey},
		{name: "not yet valid", code: f.static(t, f.cred(func(c *Credential) { c.NotBefore = f.now.Add(time.Minute) }), f.issuer), want: ReasonNotYetValid},
		{name: "expired", code: f.static(t, f.cred(func(c *Credential) { c.NotAfter = f.now.Add(-time.Second) }), f.issuer), want: ReasonExpired},
		{name: "wrong event", code: f.static(t, f.cred(func(c *Credential) { c.Event = TagOf("other") }), f.issuer), want: ReasonWrongEvent},
		{name: "wrong zone", code: f.static(t, f.cred(func(c *Credential) { c.Zone = "VIP" }), f.issuer), policy: Policy{Zones: []string{"GA"}}, want: ReasonWrongZone},
		{name: "right zone", code: f.static(t, f.cred(func(c *Credential) { c.Zone = "VIP" }), f.issuer), policy: Policy{Zones: []string{"GA", "VIP"}}, want: ReasonOK},
		{name: "revoked", code: good, facts: Facts{Revoked: &Revocation{At: f.now, Reason: "refund"}}, want: ReasonRevoked},
		{name: "superseded", code: good, facts: Facts{Entry: &TicketEntry{Serial: 2}}, want: ReasonSuperseded},
		{name: "in whitelist", code: good, facts: Facts{Entry: entry}, policy: Policy{Strict: true}, want: ReasonOK},
		{name: "strict, not in whitelist", code: good, policy: Policy{Strict: true}, want: ReasonNotInWhitelist},
		{name: "already used", code: good, facts: Facts{Used: use}, want: ReasonAlreadyUsed, detail: "at gate north-1"},
		{name: "re-entry", code: f.static(t, f.cred(func(c *Credential) { c.Flags = FlagReentry }), f.issuer), facts: Facts{Used: use}, want: ReasonReentry},
		{name: "rotating now", code: f.rotating(t, f.cred(nil), f.now.Add(-5*time.Second), false), want: ReasonOK},
		{name: "rotating short", code: f.rotating(t, f.cred(nil), f.now, true), facts: Facts{}, want: ReasonOK},
		{name: "rotating stale", code: f.rotating(t, f.cred(nil), f.now.Add(-31*time.Second), false), want: ReasonStaleCode},
		{name: "rotating from the future", code: f.rotating(t, f.cred(nil), f.now.Add(11*time.Second), false), want: ReasonStaleCode, detail: "ahead"},
		{name: "rotating within skew", code: f.rotating(t, f.cred(nil), f.now.Add(9*time.Second), false), want: ReasonOK},
		{name: "rotating wider window", code: f.rotating(t, f.cred(nil), f.now.Add(-50*time.Second), false), policy: Policy{MaxCodeAge: time.Minute}, want: ReasonOK},
		{name: "rotating replayed", code: f.rotating(t, f.cred(nil), f.now.Add(-5*time.Second), false), facts: Facts{LastCode: f.now.Add(-5 * time.Second)}, want: ReasonReplayedCode},
		{name: "rotating older than last", code: f.rotating(t, f.cred(nil), f.now.Add(-10*time.Second), false), facts: Facts{LastCode: f.now.Add(-5 * time.Second)}, want: ReasonReplayedCode},
		{name: "rotating device sig tampered", code: flip(f.rotating(t, f.cred(nil), f.now, false), 3+150), want: ReasonBadSignature},
		{name: "static code of a phone-bound ticket", code: f.static(t, f.cred(func(c *Credential) {
			c.Flags |= FlagDeviceKey
			c.DeviceKey = f.device.Public().(ed25519.PublicKey)
		}), f.issuer), want: ReasonMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.policy.Event = "expo"
			v := NewVerifier(tc.policy, f.trust)
			var got Result
			tok, err := Parse([]byte(tc.code))
			if err != nil {
				got = Result{Reason: ReasonMalformed, Detail: err.Error()}
			} else {
				var e *TicketEntry
				if tok.Kind == KindRotatingShort {
					c := f.cred(nil)
					e = &TicketEntry{ID: c.Ticket, Serial: c.Serial, NotBefore: c.NotBefore, NotAfter: c.NotAfter,
						Flags: FlagDeviceKey, DeviceKey: f.device.Public().(ed25519.PublicKey)}
				}
				if got = v.Check(tok, f.now, e); got.Reason == "" {
					got = v.Decide(tok, tc.facts)
				}
			}
			if got.Reason != tc.want || !strings.Contains(got.Detail, tc.detail) {
				t.Fatalf("got %s (%s), want %s (detail with %q)", got.Reason, got.Detail, tc.want, tc.detail)
			}
		})
	}
}

func TestShortCodeNeedsWhitelist(t *testing.T) {
	f := newFixture()
	tok, err := Parse([]byte(f.rotating(t, f.cred(nil), f.now, true)))
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(Policy{Event: "expo"}, f.trust)
	if r := v.Check(tok, f.now, nil); r.Reason != ReasonNotInWhitelist {
		t.Fatalf("short code without whitelist entry: %s", r.Reason)
	}
	other := &TicketEntry{Serial: 1, DeviceKey: f.issuer.Public().(ed25519.PublicKey)}
	if r := v.Check(tok, f.now, other); r.Reason != ReasonBadSignature {
		t.Fatalf("short code against another device key: %s", r.Reason)
	}
}

func TestKeyScopeAndWindow(t *testing.T) {
	f := newFixture()
	code := f.static(t, f.cred(nil), f.issuer)
	tok, _ := Parse([]byte(code))
	k := &f.trust.Keys[0]
	k.Events = []string{"other"}
	if r := NewVerifier(Policy{Event: "expo"}, f.trust).Check(tok, f.now, nil); r.Reason != ReasonWrongEvent {
		t.Fatalf("key scoped to another event: %s", r.Reason)
	}
	k.Events = nil
	k.NotAfter = f.now.Add(-time.Hour)
	if r := NewVerifier(Policy{Event: "expo"}, f.trust).Check(tok, f.now, nil); r.Reason != ReasonUnknownKey {
		t.Fatalf("retired key: %s", r.Reason)
	}
}

// Rollover: tickets signed by the old and the new key are both admitted
// while both are in the trust list.
func TestRollover(t *testing.T) {
	f := newFixture()
	f.trust.Keys = append(f.trust.Keys, IssuerKey{KeyID: 2, PublicKey: f.other.Public().(ed25519.PublicKey)})
	v := NewVerifier(Policy{Event: "expo"}, f.trust)
	for _, code := range []string{
		f.static(t, f.cred(nil), f.issuer),
		f.static(t, f.cred(func(c *Credential) { c.KeyID = 2 }), f.other),
	} {
		tok, err := Parse([]byte(code))
		if err != nil {
			t.Fatal(err)
		}
		if r := v.Check(tok, f.now, nil); r.Reason != "" {
			t.Fatalf("key %d: %s", tok.Credential.KeyID, r.Reason)
		}
	}
}

func FuzzParse(f *testing.F) {
	fx := newFixture()
	f.Add([]byte(fx.static(f, fx.cred(nil), fx.issuer)))
	f.Add([]byte(fx.rotating(f, fx.cred(nil), fx.now, false)))
	f.Add([]byte(fx.rotating(f, fx.cred(nil), fx.now, true)))
	f.Add([]byte("G1:"))
	f.Add([]byte("\x00\xff"))
	v := NewVerifier(Policy{Event: "expo"}, fx.trust)
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := Parse(b)
		if err != nil {
			return
		}
		// Whatever parses must go through the checks without panicking.
		e := &TicketEntry{Serial: 1, DeviceKey: fx.device.Public().(ed25519.PublicKey)}
		if r := v.Check(tok, fx.now, e); r.Reason == "" {
			v.Decide(tok, Facts{})
		}
	})
}

func FuzzOpenBundle(f *testing.F) {
	root := ed25519.NewKeyFromSeed(make([]byte, 32))
	tl, _ := Seal(TypeTrustList, &TrustList{Version: 1, Keys: []IssuerKey{{KeyID: 1, PublicKey: root.Public().(ed25519.PublicKey)}}}, root)
	env, _ := Seal(TypeBundle, &Bundle{Version: 1, Event: "expo", TrustList: tl, Tickets: []TicketEntry{{Serial: 1}}}, root)
	good, _ := json.Marshal(BundleFile{RootKey: root.Public().(ed25519.PublicKey), Bundle: env})
	f.Add(good)
	f.Add([]byte(`{"root_public_key":"","bundle":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		OpenBundle(b, nil)
		OpenBundle(b, root.Public().(ed25519.PublicKey))
	})
}
