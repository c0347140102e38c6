package verify

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"time"
)

// Reason is the machine-readable cause of a verdict. Every DENY has exactly
// one; scripts and dashboards branch on these strings, so they never change.
type Reason string

// The reasons.
const (
	ReasonOK             Reason = "ok"      // admitted
	ReasonReentry        Reason = "reentry" // admitted again; the ticket allows re-entry
	ReasonMalformed      Reason = "malformed"
	ReasonUnknownKey     Reason = "unknown_key"
	ReasonBadSignature   Reason = "bad_signature"
	ReasonNotYetValid    Reason = "not_yet_valid"
	ReasonExpired        Reason = "expired"
	ReasonWrongEvent     Reason = "wrong_event"
	ReasonWrongZone      Reason = "wrong_zone"
	ReasonRevoked        Reason = "revoked"
	ReasonSuperseded     Reason = "superseded_serial"
	ReasonAlreadyUsed    Reason = "already_used"
	ReasonStaleCode      Reason = "stale_code"
	ReasonReplayedCode   Reason = "replayed_code"
	ReasonNotInWhitelist Reason = "not_in_whitelist"
	ReasonStorageFailure Reason = "storage_failure"
)

// Reasons lists every reason, admits first.
var Reasons = []Reason{ReasonOK, ReasonReentry, ReasonMalformed, ReasonUnknownKey, ReasonBadSignature,
	ReasonNotYetValid, ReasonExpired, ReasonWrongEvent, ReasonWrongZone, ReasonRevoked, ReasonSuperseded,
	ReasonAlreadyUsed, ReasonStaleCode, ReasonReplayedCode, ReasonNotInWhitelist, ReasonStorageFailure}

// Admits reports whether the reason is an admission.
func (r Reason) Admits() bool { return r == ReasonOK || r == ReasonReentry }

// Text is the reason in plain words for gate staff.
func (r Reason) Text() string {
	switch r {
	case ReasonOK:
		return "valid ticket"
	case ReasonReentry:
		return "re-entry allowed"
	case ReasonMalformed:
		return "not a ticket code"
	case ReasonUnknownKey:
		return "issuer not trusted"
	case ReasonBadSignature:
		return "forged or altered ticket"
	case ReasonNotYetValid:
		return "not valid yet"
	case ReasonExpired:
		return "ticket expired"
	case ReasonWrongEvent:
		return "ticket for another event"
	case ReasonWrongZone:
		return "wrong entrance for this ticket"
	case ReasonRevoked:
		return "ticket cancelled"
	case ReasonSuperseded:
		return "old copy of a transferred ticket"
	case ReasonAlreadyUsed:
		return "already used"
	case ReasonStaleCode:
		return "code out of date: refresh the ticket page"
	case ReasonReplayedCode:
		return "code already shown: copied screenshot?"
	case ReasonNotInWhitelist:
		return "not on this gate's list"
	case ReasonStorageFailure:
		return "gate storage failure: call a supervisor"
	}
	return string(r)
}

// Policy is what a gate admits. The zero value admits every zone of no
// event; set Event.
type Policy struct {
	// Event is the event this gate checks tickets for.
	Event string
	// Zones this gate admits; empty admits every zone. A ticket with no
	// zone is admitted at every gate.
	Zones []string
	// Strict denies valid tickets that are not in the whitelist. Off by
	// default so tickets sold after the last sync still get in.
	Strict bool
	// MaxCodeAge is how old a rotating code may be by the gate's clock
	// (default 30s: one 15 s rotation plus slack).
	MaxCodeAge time.Duration
	// MaxCodeSkew is how far ahead of the gate's clock a rotating code may
	// be, for phones whose clock runs fast (default 10s).
	MaxCodeSkew time.Duration
}

// DefaultMaxCodeAge and DefaultMaxCodeSkew are the rotating window's defaults.
const (
	DefaultMaxCodeAge  = 30 * time.Second
	DefaultMaxCodeSkew = 10 * time.Second
)

// ReasonPassed is the reason of Passed. It is not a verdict and never
// appears in a journal record, so Reasons does not list it.
const ReasonPassed Reason = "passed"

// Result is a verdict with its reason and a detail for people, or Passed.
type Result struct {
	Reason Reason
	Detail string
}

// Passed is Check's result when every stateless check passed. It is not a
// verdict: Decide gives that.
var Passed = Result{Reason: ReasonPassed}

// Checked is a token as Check left it: its result and, for a short rotating
// code whose device signature verified, the credential completed from the
// whitelist. Only Check makes one that passed; Decide takes nothing else.
type Checked struct {
	kind     Kind
	cred     Credential
	codeTime time.Time
	res      Result
}

// Result is Passed, or the DENY that stopped the checks.
func (c *Checked) Result() Result { return c.res }

// Passed reports whether every stateless check passed.
func (c *Checked) Passed() bool { return c.res == Passed }

// Kind is how the ticket was presented.
func (c *Checked) Kind() Kind { return c.kind }

// CodeTime is the time the phone signed a rotating code; zero for a static one.
func (c *Checked) CodeTime() time.Time { return c.codeTime }

// Credential is the ticket's credential. For a short rotating code it holds
// only Ticket and Serial until the device signature verified, and then also
// what the whitelist says: Event, Flags, validity, Zone and DeviceKey.
func (c *Checked) Credential() Credential { return c.cred }

func deny(r Reason, format string, a ...any) Result {
	return Result{Reason: r, Detail: fmt.Sprintf(format, a...)}
}

// Verifier does the stateless checks: key, signatures, event, zone and
// time windows. It is safe for concurrent use; it holds no mutable state.
type Verifier struct {
	policy Policy
	tag    EventTag
	trust  *TrustList
}

// NewVerifier returns a verifier for a policy and a verified trust list.
func NewVerifier(p Policy, trust *TrustList) *Verifier {
	if p.MaxCodeAge <= 0 {
		p.MaxCodeAge = DefaultMaxCodeAge
	}
	if p.MaxCodeSkew <= 0 {
		p.MaxCodeSkew = DefaultMaxCodeSkew
	}
	return &Verifier{policy: p, tag: TagOf(p.Event), trust: trust}
}

// Policy returns the verifier's policy with defaults filled in.
func (v *Verifier) Policy() Policy { return v.policy }

// Check verifies a token at time now. entry is the whitelist entry for the
// ticket, or nil; a short rotating code cannot be checked without one. The
// result is Passed when every stateless check passed; then Decide gives the
// verdict. Check never changes tok.
func (v *Verifier) Check(tok *Token, now time.Time, entry *TicketEntry) *Checked {
	ck := &Checked{kind: tok.Kind, cred: tok.Credential, codeTime: tok.CodeTime}
	ck.res = v.check(ck, tok, now, entry)
	return ck
}

// check runs the stateless checks in their order (docs/token.md); for a
// short rotating code it completes ck's credential from entry.
func (v *Verifier) check(ck *Checked, tok *Token, now time.Time, entry *TicketEntry) Result {
	c := &ck.cred
	if tok.Kind == KindRotatingShort {
		if entry == nil || len(entry.DeviceKey) != ed25519.PublicKeySize {
			return deny(ReasonNotInWhitelist, "short rotating code for a ticket this gate has no device key for")
		}
		if c.Serial > entry.Serial {
			return deny(ReasonNotInWhitelist, "whitelist holds serial %d, code has %d: the gate's list is out of date", entry.Serial, c.Serial)
		}
		if !ed25519.Verify(entry.DeviceKey, RotatingMessage(v.tag, c.Ticket, c.Serial, uint32(tok.CodeTime.Unix())), tok.DeviceSig) {
			return deny(ReasonBadSignature, "device signature does not verify")
		}
		// The whitelist came from a root-signed bundle: take the rest from it.
		c.Event, c.Flags, c.NotBefore, c.NotAfter, c.Zone, c.DeviceKey =
			v.tag, entry.Flags, entry.NotBefore, entry.NotAfter, entry.Zone, entry.DeviceKey
	} else {
		k, ok := v.trust.Key(c.KeyID)
		if !ok {
			return deny(ReasonUnknownKey, "issuer key %d is not in the trust list", c.KeyID)
		}
		if !ed25519.Verify(k.PublicKey, credMessage(tok.signed), tok.sig) {
			return deny(ReasonBadSignature, "issuer signature does not verify")
		}
		if !k.ValidAt(now) {
			return deny(ReasonUnknownKey, "issuer key %d is not valid now", c.KeyID)
		}
		if c.Event != v.tag || !k.Covers(v.policy.Event) {
			return deny(ReasonWrongEvent, "ticket is not for %s", v.policy.Event)
		}
		if tok.Kind == KindRotating &&
			!ed25519.Verify(c.DeviceKey, RotatingMessage(c.Event, c.Ticket, c.Serial, uint32(tok.CodeTime.Unix())), tok.DeviceSig) {
			return deny(ReasonBadSignature, "device signature does not verify")
		}
	}
	if c.Zone != "" && len(v.policy.Zones) > 0 && !slices.Contains(v.policy.Zones, c.Zone) {
		return deny(ReasonWrongZone, "ticket is for zone %s", c.Zone)
	}
	if !c.NotBefore.IsZero() && now.Before(c.NotBefore) {
		return deny(ReasonNotYetValid, "valid from %s", c.NotBefore.Format(time.RFC3339))
	}
	if !c.NotAfter.IsZero() && now.After(c.NotAfter) {
		return deny(ReasonExpired, "expired at %s", c.NotAfter.Format(time.RFC3339))
	}
	if tok.Kind != KindStatic {
		age := now.Sub(tok.CodeTime)
		if age > v.policy.MaxCodeAge {
			return deny(ReasonStaleCode, "code is %s old; at most %s allowed", age.Round(time.Second), v.policy.MaxCodeAge)
		}
		if -age > v.policy.MaxCodeSkew {
			return deny(ReasonStaleCode, "code is %s ahead of the gate's clock; at most %s allowed", (-age).Round(time.Second), v.policy.MaxCodeSkew)
		}
	}
	return Passed
}

// Use is a ticket's first admission.
type Use struct {
	Seq  uint64    `json:"seq"`
	At   time.Time `json:"at"`
	Gate string    `json:"gate"`
}

// Facts is what the gate's store knows about a ticket at decision time.
type Facts struct {
	Entry    *TicketEntry // whitelist entry, nil when absent
	Revoked  *Revocation  // nil when not revoked
	Used     *Use         // first admission, nil when never admitted
	LastCode time.Time    // newest rotating code time seen, zero if none
}

// Decide turns a token that passed Check, and the store's facts about it,
// into the verdict. It is the single place where admission is decided. A
// token that failed Check keeps its DENY; one Check never saw is malformed.
func (v *Verifier) Decide(ck *Checked, f Facts) Result {
	if ck == nil || !ck.Passed() {
		if ck != nil && ck.res.Reason != "" {
			return ck.res
		}
		return deny(ReasonMalformed, "token was never checked")
	}
	c := &ck.cred
	if f.Revoked != nil {
		return deny(ReasonRevoked, "revoked %s %s", f.Revoked.At.Format(time.RFC3339), f.Revoked.Reason)
	}
	if f.Entry != nil && f.Entry.Serial > c.Serial {
		return deny(ReasonSuperseded, "serial %d, current is %d: the ticket was transferred or re-issued", c.Serial, f.Entry.Serial)
	}
	if f.Entry == nil && v.policy.Strict {
		return deny(ReasonNotInWhitelist, "strict mode: ticket is not on this gate's list")
	}
	if f.Used != nil && c.Flags&FlagReentry == 0 {
		return deny(ReasonAlreadyUsed, "first used %s at gate %s", f.Used.At.Format(time.RFC3339), f.Used.Gate)
	}
	if ck.kind != KindStatic && !f.LastCode.IsZero() && !ck.codeTime.After(f.LastCode) {
		return deny(ReasonReplayedCode, "code from %s, a code from %s was already shown",
			ck.codeTime.Format(time.RFC3339), f.LastCode.Format(time.RFC3339))
	}
	if f.Used != nil {
		return Result{Reason: ReasonReentry, Detail: fmt.Sprintf("first entry %s at gate %s", f.Used.At.Format(time.RFC3339), f.Used.Gate)}
	}
	return Result{Reason: ReasonOK}
}
