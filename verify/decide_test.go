package verify

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
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

// tamper applies fn to the bytes a code carries (after its prefix) and
// encodes them again: a change to exactly the bytes named, where flip can
// only hit whatever bytes a Base45 character spans.
func tamper(t testing.TB, code string, fn func(b []byte)) string {
	b, err := Base45Decode(code[3:])
	if err != nil {
		t.Fatal(err)
	}
	fn(b)
	return code[:3] + Base45Encode(b)
}

// deviceSigOf and codeTimeOf locate the phone's part of a full rotating
// code: the credential, then the code time (4 bytes), then the device
// signature (64).
func deviceSigOf(b []byte) []byte { return b[len(b)-ed25519.SignatureSize:] }
func codeTimeOf(b []byte) []byte {
	return b[len(b)-ed25519.SignatureSize-4 : len(b)-ed25519.SignatureSize]
}

// rotatingByOther is a full rotating code for a genuine credential bound to
// f.device, signed by another phone's key: what a copied credential without
// the phone gives an attacker.
func (f *fixture) rotatingByOther(t testing.TB, c *Credential, at time.Time) string {
	code := f.rotating(t, c, at, false)
	return tamper(t, code, func(b []byte) {
		copy(deviceSigOf(b), ed25519.Sign(f.other, RotatingMessage(c.Event, c.Ticket, c.Serial, uint32(at.Unix()))))
	})
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
		{name: "rotating device sig tampered", code: tamper(t, f.rotating(t, f.cred(nil), f.now, false), func(b []byte) { deviceSigOf(b)[10] ^= 1 }), want: ReasonBadSignature},
		{name: "rotating signed by another phone", code: f.rotatingByOther(t, f.cred(nil), f.now), want: ReasonBadSignature},
		{name: "rotating time moved", code: tamper(t, f.rotating(t, f.cred(nil), f.now.Add(-5*time.Second), false), func(b []byte) { codeTimeOf(b)[3] += 2 }), want: ReasonBadSignature},
		{name: "rotating issuer sig tampered", code: tamper(t, f.rotating(t, f.cred(nil), f.now, false), func(b []byte) {
			b[len(b)-ed25519.SignatureSize-4-1] ^= 1 // the credential's last byte: its issuer signature
		}), want: ReasonBadSignature},
		{name: "short device sig tampered", code: tamper(t, f.rotating(t, f.cred(nil), f.now, true), func(b []byte) { deviceSigOf(b)[0] ^= 1 }), want: ReasonBadSignature},
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
				got = v.Decide(v.Check(tok, f.now, e), tc.facts)
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
	if r := v.Check(tok, f.now, nil).Result(); r.Reason != ReasonNotInWhitelist {
		t.Fatalf("short code without whitelist entry: %s", r.Reason)
	}
	other := &TicketEntry{Serial: 1, DeviceKey: f.issuer.Public().(ed25519.PublicKey)}
	if r := v.Check(tok, f.now, other).Result(); r.Reason != ReasonBadSignature {
		t.Fatalf("short code against another device key: %s", r.Reason)
	}
}

func TestKeyScopeAndWindow(t *testing.T) {
	f := newFixture()
	code := f.static(t, f.cred(nil), f.issuer)
	tok, err := Parse([]byte(code))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  func(k *IssuerKey)
		want Reason
	}{
		{"in its window", func(k *IssuerKey) { k.NotBefore, k.NotAfter = f.now.Add(-time.Hour), f.now.Add(time.Hour) }, ReasonPassed},
		{"scoped to another event", func(k *IssuerKey) { k.Events = []string{"other"} }, ReasonWrongEvent},
		{"scoped to this event", func(k *IssuerKey) { k.Events = []string{"other", "expo"} }, ReasonPassed},
		{"retired", func(k *IssuerKey) { k.NotAfter = f.now.Add(-time.Hour) }, ReasonUnknownKey},
		{"not yet valid", func(k *IssuerKey) { k.NotBefore = f.now.Add(time.Hour) }, ReasonUnknownKey},
		{"valid from this instant", func(k *IssuerKey) { k.NotBefore = f.now }, ReasonPassed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := f.trust.Keys[0]
			tc.key(&k)
			r := NewVerifier(Policy{Event: "expo"}, &TrustList{Keys: []IssuerKey{k}}).Check(tok, f.now, nil).Result()
			if r.Reason != tc.want {
				t.Fatalf("%s (%s), want %q", r.Reason, r.Detail, tc.want)
			}
		})
	}
}

// TestEnvelopeTypeIsSigned: a document signed as one type does not open as
// another, even when its payload would parse as both.
func TestEnvelopeTypeIsSigned(t *testing.T) {
	root := ed25519.NewKeyFromSeed(make([]byte, 32))
	pub := root.Public().(ed25519.PublicKey)
	env, err := Seal(TypeBundle, map[string]any{"version": 7}, root)
	if err != nil {
		t.Fatal(err)
	}
	var b Bundle
	if err := env.Open(TypeBundle, pub, &b); err != nil || b.Version != 7 {
		t.Fatalf("genuine: %v %+v", err, b)
	}
	relabelled := *env
	relabelled.Type = TypeTrustList
	var tl TrustList
	if err := relabelled.Open(TypeTrustList, pub, &tl); !errors.Is(err, ErrEnvelope) {
		t.Fatalf("a bundle relabelled as a trust list opened: %v %+v", err, tl)
	}
	if err := env.Open(TypeTrustList, pub, &tl); !errors.Is(err, ErrEnvelope) {
		t.Fatalf("a bundle opened as a trust list: %v", err)
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
		if r := v.Check(tok, f.now, nil).Result(); r != Passed {
			t.Fatalf("key %d: %s", tok.Credential.KeyID, r.Reason)
		}
	}
}

// FuzzParse: no input panics, and nothing but a code signed here is ever
// admitted. Every admitted input must carry exactly the bytes of one of the
// genuine codes (case folded, as scanners change case); the seeds include
// each kind of forgery, so a missing signature check fails here at once.
func FuzzParse(f *testing.F) {
	fx := newFixture()
	genuine := map[string]bool{}
	for _, code := range []string{
		fx.static(f, fx.cred(nil), fx.issuer),
		fx.static(f, fx.cred(func(c *Credential) { c.Zone = "VIP"; c.Flags = FlagReentry }), fx.issuer),
		fx.rotating(f, fx.cred(nil), fx.now, false),
		fx.rotating(f, fx.cred(nil), fx.now.Add(-10*time.Second), false),
		fx.rotating(f, fx.cred(nil), fx.now, true),
	} {
		genuine[carried(code)] = true
		f.Add([]byte(code))
	}
	rot := fx.rotating(f, fx.cred(nil), fx.now, false)
	for _, forged := range []string{
		fx.static(f, fx.cred(nil), fx.other),
		fx.static(f, fx.cred(func(c *Credential) { c.KeyID = 9 }), fx.other),
		flip(fx.static(f, fx.cred(nil), fx.issuer), 3+36+1),
		fx.rotatingByOther(f, fx.cred(nil), fx.now),
		tamper(f, rot, func(b []byte) { deviceSigOf(b)[5] ^= 0x80 }),
		tamper(f, rot, func(b []byte) { codeTimeOf(b)[3]-- }),
		tamper(f, rot, func(b []byte) { b[len(b)-ed25519.SignatureSize-5] ^= 1 }),
		tamper(f, fx.rotating(f, fx.cred(nil), fx.now, true), func(b []byte) { deviceSigOf(b)[63] ^= 1 }),
		"G1:",
		"\x00\xff",
	} {
		f.Add([]byte(forged))
	}
	v := NewVerifier(Policy{Event: "expo"}, fx.trust)
	e := &TicketEntry{ID: TicketID{1, 2, 3}, Serial: 1, Flags: FlagDeviceKey, DeviceKey: fx.device.Public().(ed25519.PublicKey),
		NotBefore: fx.now.Add(-time.Hour), NotAfter: fx.now.Add(time.Hour)}
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, err := Parse(b)
		if err != nil {
			return
		}
		r := v.Decide(v.Check(tok, fx.now, e), Facts{})
		if r.Reason.Admits() && !genuine[carried(string(b))] {
			t.Fatalf("admitted %q (%s), which no key here signed", b, r.Reason)
		}
	})
}

// carried is what a code carries: its prefix and decoded bytes, the way
// Parse reads them (case folded, line end trimmed).
func carried(code string) string {
	s := strings.ToUpper(strings.TrimRight(code, "\r\n"))
	if len(s) < 3 {
		return ""
	}
	b, err := Base45Decode(s[3:])
	if err != nil {
		return ""
	}
	return s[:3] + string(b)
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
