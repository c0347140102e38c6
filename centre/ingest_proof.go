package centre

import (
	"encoding/json"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	bolt "go.etcd.io/bbolt"
)

// Proof of presentation: a gate's login can publish anything on its
// entries topic, so an admission counts as a use, and reaches the other
// gates, only when the code it says it scanned verifies with the same
// verify code the gates run: issuer key and signature, event, and for
// rotating codes the phone's signature. The time window is the gate's to
// judge (its clock, its policy) and is not checked again here.

// checkProofs returns the admissions of b whose code does not verify, by
// seq, each with its alert. Signatures are checked on every core: an
// Ed25519 verification costs about as much as storing the entry.
func (c *Centre) checkProofs(b *wire.ParsedBatch) (map[uint64]Alert, error) {
	var admits []wire.Entry
	for _, e := range b.Parsed {
		if e.Verdict == cache.Admit {
			admits = append(admits, e)
		}
	}
	if len(admits) == 0 {
		return nil, nil
	}
	// With books shared by several instances, the primary's trust list is
	// in them (an instance beside the primary has no issuer keys of its
	// own); else central.db has the keys.
	trust, err := c.sharedTrust()
	if err != nil {
		return nil, fmt.Errorf("shared trust list: %w", err)
	}
	short := map[verify.TicketID]*Ticket{} // the tickets of short rotating codes: their device keys
	err = c.db.View(func(tx *bolt.Tx) error {
		if trust == nil {
			var err error
			if trust, err = issuerKeys(tx); err != nil {
				return err
			}
		}
		for _, e := range admits {
			if tok, err := verify.Parse([]byte(e.Code)); err == nil && tok.Kind == verify.KindRotatingShort {
				if t, err := getTicket(tx, tok.Credential.Ticket); err == nil {
					short[t.ID] = t
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	verifiers := map[string]*verify.Verifier{}
	for _, e := range admits {
		if verifiers[e.Event] == nil {
			// The gate's window is not ours to judge: wide enough for any code.
			verifiers[e.Event] = verify.NewVerifier(verify.Policy{Event: e.Event, MaxCodeAge: 1 << 62, MaxCodeSkew: 1 << 62}, trust)
		}
	}
	alerts := make([]Alert, len(admits))
	var wg sync.WaitGroup
	workers := min(runtime.GOMAXPROCS(0), (len(admits)+15)/16)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(admits); i += workers {
				e := admits[i]
				if kind, why := proveAdmission(verifiers[e.Event], trust, short, e); kind != "" {
					alerts[i] = Alert{Kind: kind, Ticket: e.Ticket, Detail: why}
				}
			}
		})
	}
	wg.Wait()
	var bad map[uint64]Alert
	for i, a := range alerts {
		if a.Kind != "" {
			if bad == nil {
				bad = map[uint64]Alert{}
			}
			bad[admits[i].Seq] = a
		}
	}
	return bad, nil
}

// issuerKeys is the trust list the centre signs, unsealed.
func issuerKeys(tx *bolt.Tx) (*verify.TrustList, error) {
	l := &verify.TrustList{Version: version(tx)}
	err := tx.Bucket(bKeys).ForEach(func(_, v []byte) error {
		var k verify.IssuerKey
		if err := json.Unmarshal(v, &k); err != nil {
			return err
		}
		l.Keys = append(l.Keys, k)
		return nil
	})
	return l, err
}

// proveAdmission checks e's code; it returns the alert kind and why when
// the code does not prove the admission.
func proveAdmission(v *verify.Verifier, trust *verify.TrustList, short map[verify.TicketID]*Ticket, e wire.Entry) (kind, why string) {
	if e.Code == "" {
		return AlertUnproven, "admission without the scanned code"
	}
	tok, err := verify.Parse([]byte(e.Code))
	if err != nil {
		return AlertUnproven, "scanned code: " + err.Error()
	}
	if tok.Credential.Ticket.String() != e.Ticket {
		return AlertUnproven, fmt.Sprintf("scanned code is of ticket %s", tok.Credential.Ticket)
	}
	var entry *verify.TicketEntry
	if tok.Kind == verify.KindRotatingShort {
		// The short code names the ticket; its device key is in the books.
		t := short[tok.Credential.Ticket]
		if t == nil {
			return AlertUnproven, "short rotating code of a ticket this centre did not issue"
		}
		entry = &verify.TicketEntry{ID: t.ID, Serial: t.Serial, Flags: t.Flags, NotBefore: t.NotBefore,
			NotAfter: t.NotAfter, Zone: t.Zone, DeviceKey: t.DeviceKey}
		if t.Event != v.Policy().Event {
			return AlertOtherEvent, fmt.Sprintf("ticket of event %q", t.Event)
		}
	}
	// Check at a time the issuer key was valid: when the key may be used is
	// a time window too, the gate's to judge.
	at := e.At
	if k, ok := trust.Key(tok.Credential.KeyID); ok && tok.Kind != verify.KindRotatingShort && !k.ValidAt(at) {
		at = k.NotBefore
	}
	switch r := v.Check(tok, at, entry).Result(); r.Reason {
	case verify.ReasonPassed, verify.ReasonNotYetValid, verify.ReasonExpired, verify.ReasonStaleCode:
		return "", ""
	case verify.ReasonWrongEvent:
		return AlertOtherEvent, r.Detail
	default:
		return AlertUnproven, string(r.Reason) + ": " + r.Detail
	}
}

// SanityOptions set when the centre raises sanity alerts; the zero value
// is the default.
type SanityOptions struct {
	// MaxRate is the admissions a second one gate may sustain over Window
	// before an alert (default 5: about twice what one lane passes).
	MaxRate float64
	// Window is how long the rate must be sustained (default 10s).
	Window time.Duration
}

// SetSanity sets the sanity alert thresholds.
func (c *Centre) SetSanity(o SanityOptions) {
	c.rates.mu.Lock()
	defer c.rates.mu.Unlock()
	c.rates.o = o
}

type rateBook struct {
	mu      sync.Mutex
	o       SanityOptions
	times   map[string][]time.Time // venue/gate -> admission times (the gate's clock) within the window
	alerted map[string]time.Time   // venue/gate -> the admission time of the last rate alert
}

// sanity returns the alerts a stored batch raises besides unproven
// claims: a new store instance of a gate that had entries, and a rate of
// admissions no lane passes.
func (c *Centre) sanity(venue string, b *wire.ParsedBatch, res *IngestResult, at time.Time) []Alert {
	var out []Alert
	if res.New > 0 && res.PrevInstance != "" && res.PrevInstance != b.Instance {
		out = append(out, Alert{Venue: venue, Gate: b.Gate, Kind: AlertNewInstance, At: at,
			Detail: fmt.Sprintf("entries from store instance %s after %s: the gate was re-provisioned, or someone else uses its login", b.Instance, res.PrevInstance)})
	}
	if len(res.Admitted) == 0 {
		return out
	}
	r := &c.rates
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.times == nil {
		r.times, r.alerted = map[string][]time.Time{}, map[string]time.Time{}
	}
	rate, window := r.o.MaxRate, r.o.Window
	if rate <= 0 {
		rate = 5
	}
	if window <= 0 {
		window = 10 * time.Second
	}
	k := venue + "/" + b.Gate
	ts := r.times[k]
	for _, a := range res.Admitted {
		ts = append(ts, a.At)
	}
	last := ts[len(ts)-1]
	keep := ts[:0]
	for _, t := range ts {
		if last.Sub(t) <= window {
			keep = append(keep, t)
		}
	}
	ts = keep
	r.times[k] = ts
	if float64(len(ts)) > rate*window.Seconds() && last.Sub(r.alerted[k]) > window {
		r.alerted[k] = last
		out = append(out, Alert{Venue: venue, Gate: b.Gate, Kind: AlertRate, At: at,
			Detail: fmt.Sprintf("%d admissions within %s by the gate's clock; a lane passes at most %.0f a second", len(ts), window, rate)})
	}
	return out
}
