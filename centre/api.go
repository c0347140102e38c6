package centre

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gated-dev/gated/verify"
)

// API is gatesync's HTTP API. Every route but /healthz needs the bearer
// token from DIR/api.token. Issuing and revoking publish the matching
// whitelist deltas through the sync server (Centre.OnChange).
//
//	GET  /healthz                            200 "ok", or 503 and why (ingest failing)
//	GET  /api/v1/gates                       online follows the heartbeat
//	DELETE /api/v1/gates/{venue}/{gate}      remove a gate and its broker login
//	POST /api/v1/gates/{venue}/{gate}/lock   refuse its broker login (and disconnect it)
//	POST /api/v1/gates/{venue}/{gate}/unlock
//	GET  /api/v1/entries?since=N[&limit=M]   records with n > N, and "next"
//	GET  /api/v1/conflicts
//	POST /api/v1/events/{event}/tickets      IssueBody -> IssuedTicket list
//	POST /api/v1/tickets/{id}/revoke         {"reason": "..."} -> revocation
type API struct {
	c     *Centre
	token string
	log   *slog.Logger
}

// NewAPI returns the API handler for c, guarded by token.
func NewAPI(c *Centre, token string, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &API{c: c, token: token, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /api/v1/gates", a.auth(a.gates))
	mux.HandleFunc("DELETE /api/v1/gates/{venue}/{gate}", a.auth(a.removeGate))
	mux.HandleFunc("POST /api/v1/gates/{venue}/{gate}/lock", a.auth(a.lockGate(true)))
	mux.HandleFunc("POST /api/v1/gates/{venue}/{gate}/unlock", a.auth(a.lockGate(false)))
	mux.HandleFunc("GET /api/v1/entries", a.auth(a.entries))
	mux.HandleFunc("GET /api/v1/conflicts", a.auth(a.conflicts))
	mux.HandleFunc("GET /api/v1/alerts", a.auth(a.alerts))
	mux.HandleFunc("POST /api/v1/events/{event}/tickets", a.auth(a.issue))
	mux.HandleFunc("POST /api/v1/tickets/{id}/revoke", a.auth(a.revoke))
	return mux
}

func (a *API) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gatesync"`)
			writeErr(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token (see DIR/api.token)"))
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// APIError is the body of every error response.
type APIError struct {
	Error string `json:"error"`
}

func writeErr(w http.ResponseWriter, code int, err error) { writeJSON(w, code, APIError{err.Error()}) }

func (a *API) gates(w http.ResponseWriter, _ *http.Request) {
	gs, err := a.c.Gates()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, gs)
}

// healthz is unauthenticated, for load balancers and monitors; the reason
// it gives names no ticket or gate secret.
func (a *API) healthz(w http.ResponseWriter, _ *http.Request) {
	if err := a.c.Health(); err != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("unhealthy: " + err.Error() + "\n"))
		return
	}
	w.Write([]byte("ok\n"))
}

// GateChange is the answer to removing, locking or unlocking a gate.
type GateChange struct {
	Venue  string `json:"venue"`
	Gate   string `json:"gate"`
	Action string `json:"action"` // "removed", "locked" or "unlocked"
}

func (a *API) gateError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	if errors.Is(err, ErrNoGate) {
		code = http.StatusNotFound
	}
	writeErr(w, code, err)
}

func (a *API) removeGate(w http.ResponseWriter, r *http.Request) {
	venue, gate := r.PathValue("venue"), r.PathValue("gate")
	if err := a.c.RemoveGate(venue, gate); err != nil {
		a.gateError(w, err)
		return
	}
	a.log.Info("gate removed", "venue", venue, "gate", gate)
	writeJSON(w, http.StatusOK, GateChange{venue, gate, "removed"})
}

func (a *API) lockGate(locked bool) http.HandlerFunc {
	action := map[bool]string{true: "locked", false: "unlocked"}[locked]
	return func(w http.ResponseWriter, r *http.Request) {
		venue, gate := r.PathValue("venue"), r.PathValue("gate")
		if err := a.c.LockGate(venue, gate, locked); err != nil {
			a.gateError(w, err)
			return
		}
		a.log.Warn("gate login "+action, "venue", venue, "gate", gate)
		writeJSON(w, http.StatusOK, GateChange{venue, gate, action})
	}
}

// EntriesPage is the body of GET /api/v1/entries.
type EntriesPage struct {
	Entries []Record `json:"entries"`
	Next    uint64   `json:"next"` // pass as since= for the next page
}

// pageArgs reads since and limit (default 1000) of a paged list, or
// answers 400.
func pageArgs(w http.ResponseWriter, r *http.Request) (since uint64, limit int, ok bool) {
	q := r.URL.Query()
	since, err := strconv.ParseUint(q.Get("since"), 10, 64)
	if q.Get("since") != "" && err != nil {
		writeErr(w, http.StatusBadRequest, errors.New("since: want a record number"))
		return 0, 0, false
	}
	limit = 1000
	if l := q.Get("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 1 || limit > 100000 {
			writeErr(w, http.StatusBadRequest, errors.New("limit: want 1-100000"))
			return 0, 0, false
		}
	}
	return since, limit, true
}

func (a *API) entries(w http.ResponseWriter, r *http.Request) {
	since, limit, ok := pageArgs(w, r)
	if !ok {
		return
	}
	es, err := a.c.Entries(since, limit)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	p := EntriesPage{Entries: es, Next: since}
	if p.Entries == nil {
		p.Entries = []Record{}
	}
	if len(es) > 0 {
		p.Next = es[len(es)-1].N
	}
	writeJSON(w, http.StatusOK, p)
}

func (a *API) conflicts(w http.ResponseWriter, _ *http.Request) {
	cs, err := a.c.Conflicts()
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, cs)
}

// AlertsPage is the answer of GET /api/v1/alerts?since=N&limit=M: the
// alerts numbered above since, oldest first; next is the since of the
// next page.
type AlertsPage struct {
	Alerts []Alert `json:"alerts"`
	Next   uint64  `json:"next"`
}

func (a *API) alerts(w http.ResponseWriter, r *http.Request) {
	since, limit, ok := pageArgs(w, r)
	if !ok {
		return
	}
	as, err := a.c.Alerts(since, limit)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	p := AlertsPage{Alerts: as, Next: since}
	if len(as) > 0 {
		p.Next = as[len(as)-1].N
	}
	writeJSON(w, http.StatusOK, p)
}

// IssueBody is the body of POST /api/v1/events/{event}/tickets.
type IssueBody struct {
	Count     int       `json:"count"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	Zone      string    `json:"zone,omitempty"`
	Reentry   bool      `json:"reentry,omitempty"`
	Rotating  bool      `json:"rotating,omitempty"`
	// DeviceKey (base64, 32 bytes) binds every ticket to the buyer's phone
	// key; the answer then carries each ticket's credential instead of a code.
	DeviceKey []byte `json:"device_key,omitempty"`
	// Holders are masked holders, one per ticket, shown to gate staff.
	Holders []string `json:"holders,omitempty"`
	// Key makes the call idempotent (the Idempotency-Key header does too):
	// repeating it returns the same tickets.
	Key string `json:"key,omitempty"`
}

// IssuedTicket is one ticket in the issue response: its id and the QR
// text to show now (for a rotating ticket, its current code).
type IssuedTicket struct {
	ID         verify.TicketID `json:"id"`
	Code       string          `json:"code,omitempty"`
	Credential []byte          `json:"credential,omitempty"` // phone-bound tickets: the phone signs codes with it
}

func (a *API) issue(w http.ResponseWriter, r *http.Request) {
	var b IssueBody
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	d.DisallowUnknownFields()
	if err := d.Decode(&b); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if len(b.Zone) > verify.MaxZoneLen {
		writeErr(w, http.StatusBadRequest, errors.New("zone too long"))
		return
	}
	if b.Key == "" {
		b.Key = r.Header.Get("Idempotency-Key")
	}
	ts, err := a.c.Issue(IssueRequest{Event: r.PathValue("event"), Count: b.Count, NotBefore: b.NotBefore, NotAfter: b.NotAfter,
		Zone: b.Zone, Reentry: b.Reentry, Rotating: b.Rotating, DeviceKey: b.DeviceKey, Holders: b.Holders, Key: b.Key})
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	out := make([]IssuedTicket, len(ts))
	for i, t := range ts {
		out[i] = IssuedTicket{ID: t.ID, Code: t.Code()}
		if len(b.DeviceKey) > 0 {
			out[i] = IssuedTicket{ID: t.ID, Credential: t.Credential}
		} else if b.Rotating {
			if out[i].Code, err = a.c.Present(t.ID, a.c.now(), false); err != nil {
				writeErr(w, http.StatusInternalServerError, err)
				return
			}
		}
	}
	a.log.Info("tickets issued", "event", r.PathValue("event"), "count", len(ts))
	writeJSON(w, http.StatusCreated, out)
}

// RevokeBody is the body of POST /api/v1/tickets/{id}/revoke.
type RevokeBody struct {
	Reason string `json:"reason"`
}

func (a *API) revoke(w http.ResponseWriter, r *http.Request) {
	id, err := verify.ParseTicketID(r.PathValue("id"))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	var b RevokeBody
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<12)).Decode(&b); err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
	}
	if b.Reason == "" {
		b.Reason = "revoked"
	}
	rv, err := a.c.Revoke(id, b.Reason)
	if errors.Is(err, ErrNoTicket) {
		writeErr(w, http.StatusNotFound, err)
		return
	}
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	a.log.Info("ticket revoked", "ticket", id, "reason", rv.Reason)
	writeJSON(w, http.StatusOK, rv)
}
