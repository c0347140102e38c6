// Package cache is the gate's store: one bbolt file holding the event's
// trust list, whitelist and revocations, the tickets already used, and the
// journal of every decision with its outbox for the centre.
//
// Record takes a Scan that the gate checked outside the store (a
// verify.Checked, or the final result of a scan that did not parse),
// decides it with verify.Verifier.Decide against what the store knows, and
// journals the Decision. A decision, its journal record, its outbox record and the ticket's use
// are committed in one transaction before Record returns, so a verdict that
// was signalled is never lost, even to a power cut. Concurrent callers share
// transactions (group commit): one fsync serves every scan that arrived
// while the previous commit was on disk. Other gates' admissions arriving
// by sync join the same commits (joinCommit), or commit on their own at
// most once per Options.LiveDelay.
//
// A failed commit is never half true: the file is closed, reopened and
// read back before the batch is answered (see fault.go), and the store's
// Health says so until a commit succeeds. A damaged file is refused with
// ErrDamaged, never rewritten; Salvage copies out what can be read.
//
// Buckets: meta, tickets, revocations, used, codes, journal, outbox; and
// staging (a snapshot being received), retired (the whitelist it replaced,
// being deleted) and archive (retention's committed archive file lengths)
// while they have something to hold.
package cache
