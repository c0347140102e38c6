// Package centre is the central side of gated, what gatesync runs: the
// registry of keys and tickets, the books of what gates admitted, the
// gates' logins, and the sync server and HTTP API that connect them.
//
// Registry. The root key signs everything gates receive and is pinned by
// them; issuer keys (AddIssuerKey, TrustList) sign tickets. Issue,
// Reissue, SetHolder and Revoke change the tickets of an event, and every
// committed change is logged as a numbered Delta of that event (Deltas,
// EventVersion), so a gate that has version n needs only what came after
// it, or a Snapshot when it is too far behind. Export seals an event's
// whole state as the provisioning bundle a gate is first loaded with.
//
// Books. Ingest stores a gate's uplink batch exactly once (deduplicated by
// gate, store instance and sequence, and by entry id) before it is acked:
// each entry as a Record, each ticket's first admission, a Conflict when a
// ticket is admitted twice, the numbered uses log gates catch up from, and
// Alerts. The books live in an IngestStore: BoltIngest in central.db, or
// pgstore's PostgreSQL when several gatesync instances share ingest;
// ingesttest is the suite both pass.
//
// Gates. Each gate has a state (heartbeats, online or not, its clock
// offset and backlog) and a broker login the operator can lock or remove
// (LockGate, RemoveGate).
//
// Transport. Server speaks the wire format with gates over a Bus: the
// broker embedded in gatesync (StartEmbedded, whose ACL lets a gate write
// only its own topics) or an external mosquitto (DialExternal). NewAPI is
// the HTTP API for sales systems and operators, behind the bearer token in
// APITokenFile.
//
// State lives in one data directory made by Init: the root and issuer
// keys as PEM files, the API token, and central.db (bbolt).
package centre
