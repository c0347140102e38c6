// Package verify reads ticket codes and decides admissions, offline, on
// the gate box; the centre uses it too, to issue codes and to prove the
// admissions gates report. docs/token.md is the normative text.
//
// # Concepts
//
// A credential ([Credential]) is the issuer-signed record of one ticket:
// its id, event tag, serial, validity window, zone, flags and, for a ticket
// bound to a phone, the phone's device key. The issuer signs it with
// Ed25519 under a key id.
//
// A ticket is shown as one of three codes, told apart by their prefix
// ([Kind]):
//   - static (G1:): the credential alone, for tickets not bound to a phone;
//   - rotating (G2:): the credential plus a time the phone signed with its
//     device key, renewed every 15 seconds so a screenshot goes stale;
//   - short rotating (G3:): the ticket id, serial and the signed time only,
//     small enough for any scanner; the gate takes the rest of the
//     credential, and the device key, from its whitelist.
//
// The trust list ([TrustList]) names the issuer keys a gate accepts, when,
// and for which events; the root key signs it. Signed documents travel in
// an envelope ([Envelope]): the exact payload bytes, their type and the
// root's signature, so no canonical JSON is needed and a document of one
// type never passes for another. A bundle ([Bundle]) provisions a gate for
// one event: its trust list, whitelist ([TicketEntry]) and revocations.
//
// # Check, then Decide
//
// [Parse] checks a scan's structure only. [Verifier.Check] does the
// stateless checks (signatures, key, event, zone, time windows) and returns
// a [Checked]; it never changes the token. [Verifier.Decide] takes only a
// Checked, with the store's [Facts] about the ticket (revocation, whitelist
// serial, first use, newest code seen), and gives the verdict. A token
// Check never saw cannot be decided: Decide has no Token parameter, and a
// Checked not made by Check is refused as malformed. Check's result is
// [Passed] when it found nothing wrong; Passed is not a verdict.
//
// # Reasons
//
// Every verdict has exactly one [Reason]; scripts and dashboards branch on
// the strings, so they never change. Admissions are ok and reentry. The
// checks run in a fixed order and stop at the first failure: malformed,
// unknown_key (not_in_whitelist for a short code), bad_signature,
// unknown_key (key window), wrong_event, wrong_zone, not_yet_valid,
// expired, stale_code, then Decide's revoked, superseded_serial,
// not_in_whitelist (strict mode), already_used and replayed_code; the gate
// adds storage_failure when the decision could not be committed. Signature
// checks come first, so every later reason speaks of authentic data.
package verify
