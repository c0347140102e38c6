package verify_test

import (
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/gated-dev/gated/verify"
)

// A gate parses a scan, checks it, and decides it with what its store knows
// about the ticket.
func ExampleVerifier_Decide() {
	issuer := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	trust := &verify.TrustList{Keys: []verify.IssuerKey{{KeyID: 1, PublicKey: issuer.Public().(ed25519.PublicKey)}}}
	now := time.Date(2026, 12, 31, 20, 0, 0, 0, time.UTC)
	cred := verify.Credential{KeyID: 1, Ticket: verify.TicketID{1}, Event: verify.TagOf("expo"), Serial: 1}
	signed, err := cred.Sign(issuer)
	if err != nil {
		panic(err)
	}

	v := verify.NewVerifier(verify.Policy{Event: "expo"}, trust)
	tok, err := verify.Parse([]byte(verify.StaticCode(signed)))
	if err != nil {
		panic(err)
	}
	checked := v.Check(tok, now, nil)
	fmt.Println(checked.Passed())
	fmt.Println(v.Decide(checked, verify.Facts{}).Reason)
	fmt.Println(v.Decide(checked, verify.Facts{Used: &verify.Use{At: now, Gate: "north-1"}}).Reason)
	// Output:
	// true
	// ok
	// already_used
}
