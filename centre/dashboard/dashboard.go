// Package dashboard is gatesync's live operations page: every gate with
// its online state, last contact, outbox backlog and clock offset; entries
// a minute per gate; conflicts and alerts. The page at /dashboard/ updates
// itself from server-sent events (/dashboard/events) without reloading.
//
// One poller (Run) reads the centre's books every Options.Every while a
// page is open (every 5 s otherwise), only the entries new since its last
// look, and pushes a new state to every
// open page when something changed (and at least every 5 s). Access needs
// the API token: as a bearer header, or once as /dashboard/?token=T, which
// sets a session cookie that opens the dashboard only (not the API) and
// takes the token out of the address bar. See docs/web.md.
package dashboard

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gated-dev/gated/centre"
)

//go:embed assets
var assets embed.FS

// Source is what the dashboard reads of the centre; *centre.Centre has
// it. Implementations must be safe for concurrent use.
type Source interface {
	Gates() ([]centre.GateState, error)
	Entries(since uint64, limit int) ([]centre.Record, error)
	Conflicts() ([]centre.Conflict, error)
}

// Healther is a Source that knows its own health (*centre.Centre does):
// a failure shows as a critical alert, such as ingest failing on a full
// disk at the centre.
type Healther interface {
	Health() error
}

// AlertSource is a Source that also books alerts against gates (claims
// the centre did not believe, sanity checks); *centre.Centre is one. The
// dashboard shows those of the last hour.
type AlertSource interface {
	Alerts(since uint64, limit int) ([]centre.Alert, error)
}

// Options tune the dashboard; the zero value of each field is its default.
type Options struct {
	// Token is the API bearer token (required).
	Token string
	// Logger gets read failures (default: discard).
	Logger *slog.Logger
	// Every is how often the books are read (default 500ms).
	Every time.Duration
	// Minutes is how many minutes of entries a gate's chart shows (default 15).
	Minutes int
	// SilentAfter raises an alert for an online gate not heard from for
	// this long (default 2m: four missed heartbeats).
	SilentAfter time.Duration
	// MaxBacklog raises an alert for a gate whose outbox holds more
	// entries (default 100).
	MaxBacklog int
	// MaxClockOffset raises an alert for a gate whose clock is further
	// off the centre's (default 2s).
	MaxClockOffset time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Dashboard serves the page and its events. Register its routes on a
// mux and run its poller with Run.
type Dashboard struct {
	src     Source
	o       Options
	log     *slog.Logger
	session string // cookie value: HMAC of the token, opens the dashboard only

	mu     sync.Mutex
	state  []byte // latest state JSON
	subs   map[chan []byte]struct{}
	done   chan struct{}
	ready  chan struct{}
	readyO sync.Once

	// poller state, owned by Run
	cursor  uint64
	minutes map[string]map[int64]*count // gate -> unix minute -> counts
	totals  map[string]*count
	last    map[string]*Decision
	sentAt  time.Time
	sent    []byte
	// alertCursor is the last booked alert read; recent the newest read.
	alertCursor uint64
	recent      []centre.Alert
}

type count struct{ admitted, denied int }

// New returns a dashboard over src.
func New(src Source, o Options) (*Dashboard, error) {
	if o.Token == "" {
		return nil, errors.New("dashboard: no API token")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Every <= 0 {
		o.Every = 500 * time.Millisecond
	}
	if o.Minutes <= 0 {
		o.Minutes = 15
	}
	if o.SilentAfter <= 0 {
		o.SilentAfter = 2 * time.Minute
	}
	if o.MaxBacklog <= 0 {
		o.MaxBacklog = 100
	}
	if o.MaxClockOffset <= 0 {
		o.MaxClockOffset = 2 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := hmac.New(sha256.New, []byte(o.Token))
	m.Write([]byte("gatesync/dashboard/v1"))
	return &Dashboard{src: src, o: o, log: o.Logger, session: hex.EncodeToString(m.Sum(nil)),
		subs: map[chan []byte]struct{}{}, done: make(chan struct{}), ready: make(chan struct{}),
		minutes: map[string]map[int64]*count{}, totals: map[string]*count{}, last: map[string]*Decision{}}, nil
}

// State is what the page shows; GET /dashboard/state.json returns it.
type State struct {
	Now       time.Time         `json:"now"`
	Minutes   []time.Time       `json:"minutes"` // start of each chart minute, oldest first
	Gates     []Gate            `json:"gates"`
	Conflicts []centre.Conflict `json:"conflicts"` // newest first, at most 50
	Alerts    []Alert           `json:"alerts"`
	Totals    Totals            `json:"totals"`
}

// Gate is one gate's row.
type Gate struct {
	centre.GateState
	Key             string    `json:"key"` // venue/gate
	Admitted        int       `json:"admitted"`
	Denied          int       `json:"denied"`
	PerMinute       []int     `json:"per_minute"` // entries in each of State.Minutes
	AdmitsPerMinute []int     `json:"admits_per_minute"`
	Last            *Decision `json:"last,omitempty"`
}

// Decision is a gate's latest entry in the books.
type Decision struct {
	Verdict string    `json:"verdict"`
	Reason  string    `json:"reason"`
	Ticket  string    `json:"ticket"`
	At      time.Time `json:"at"`
}

// Alert is something an operator should look at.
type Alert struct {
	Level string `json:"level"` // "warning" or "critical"
	Gate  string `json:"gate,omitempty"`
	Text  string `json:"text"`
}

// Totals sum the books.
type Totals struct {
	Entries   int `json:"entries"`
	Admitted  int `json:"admitted"`
	Denied    int `json:"denied"`
	Conflicts int `json:"conflicts"`
	Online    int `json:"online"`
	Gates     int `json:"gates"`
}

// Run polls the books until ctx is done; then every open event stream
// ends, so the HTTP server can shut down.
func (d *Dashboard) Run(ctx context.Context) {
	defer close(d.done)
	t := time.NewTicker(d.o.Every)
	defer t.Stop()
	var last time.Time
	for {
		// Nobody watching: look every 5 s, so the poller keeps up without
		// loading the store; a page that connects gets the next tick's look.
		if d.watched() || time.Since(last) >= idleEvery {
			if err := d.refresh(); err != nil {
				d.log.Warn("read the books", "err", err)
			}
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

const (
	page      = 5000            // entries a read
	idleEvery = 5 * time.Second // how often the books are read with no page open
)

func (d *Dashboard) watched() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.subs) > 0
}

func (d *Dashboard) refresh() error {
	for {
		rs, err := d.src.Entries(d.cursor, page)
		if err != nil {
			return fmt.Errorf("entries: %w", err)
		}
		for _, r := range rs {
			d.note(r)
			d.cursor = r.N
		}
		if len(rs) < page {
			break
		}
	}
	gates, err := d.src.Gates()
	if err != nil {
		return fmt.Errorf("gates: %w", err)
	}
	conflicts, err := d.src.Conflicts()
	if err != nil {
		return fmt.Errorf("conflicts: %w", err)
	}
	st := d.build(gates, conflicts)
	if h, ok := d.src.(Healther); ok {
		if err := h.Health(); err != nil {
			st.Alerts = append([]Alert{{Level: "critical", Text: "centre: " + err.Error()}}, st.Alerts...)
		}
	}
	if as, ok := d.src.(AlertSource); ok {
		// Page on from the last one read: a gate flooding forged claims
		// costs one read of what is new, and the page keeps the newest.
		for {
			booked, err := as.Alerts(d.alertCursor, page)
			if err != nil {
				return fmt.Errorf("alerts: %w", err)
			}
			for _, a := range booked {
				d.alertCursor = a.N
			}
			d.recent = append(d.recent, booked...)
			d.recent = d.recent[max(0, len(d.recent)-maxAlerts):]
			if len(booked) < page {
				break
			}
		}
		st.Alerts = append(st.Alerts, bookedAlerts(d.recent, st.Now)...)
	}
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	st.Now = time.Time{}
	cmp, _ := json.Marshal(st)
	now := d.o.Now()
	if bytes.Equal(cmp, d.sent) && now.Sub(d.sentAt) < 5*time.Second {
		return nil
	}
	d.sent, d.sentAt = cmp, now
	d.publish(body)
	return nil
}

// note counts one record.
func (d *Dashboard) note(r centre.Record) {
	var e struct {
		Verdict string    `json:"verdict"`
		Reason  string    `json:"reason"`
		Ticket  string    `json:"ticket"`
		At      time.Time `json:"at"`
	}
	if err := json.Unmarshal(r.Entry, &e); err != nil {
		d.log.Warn("unreadable entry", "n", r.N, "err", err)
		return
	}
	if e.At.IsZero() {
		e.At = r.ReceivedAt
	}
	key := r.Venue + "/" + r.Gate
	if d.totals[key] == nil {
		d.totals[key] = &count{}
		d.minutes[key] = map[int64]*count{}
	}
	if last := d.last[key]; last == nil || !e.At.Before(last.At) {
		d.last[key] = &Decision{Verdict: e.Verdict, Reason: e.Reason, Ticket: e.Ticket, At: e.At}
	}
	minute := e.At.Unix() / 60
	if minute <= d.o.Now().Unix()/60-int64(d.o.Minutes) {
		d.add(d.totals[key], e.Verdict)
		return
	}
	c := d.minutes[key][minute]
	if c == nil {
		c = &count{}
		d.minutes[key][minute] = c
	}
	d.add(c, e.Verdict)
	d.add(d.totals[key], e.Verdict)
}

func (d *Dashboard) add(c *count, verdict string) {
	if verdict == "admit" {
		c.admitted++
	} else {
		c.denied++
	}
}

func (d *Dashboard) build(gates []centre.GateState, conflicts []centre.Conflict) *State {
	now := d.o.Now().UTC()
	cur := now.Unix() / 60
	st := &State{Now: now, Gates: []Gate{}, Alerts: []Alert{}}
	for m := cur - int64(d.o.Minutes) + 1; m <= cur; m++ {
		st.Minutes = append(st.Minutes, time.Unix(m*60, 0).UTC())
	}
	for _, ms := range d.minutes {
		for m := range ms {
			if m <= cur-int64(d.o.Minutes) {
				delete(ms, m)
			}
		}
	}
	sort.Slice(gates, func(i, j int) bool {
		if gates[i].Venue != gates[j].Venue {
			return gates[i].Venue < gates[j].Venue
		}
		return gates[i].Gate < gates[j].Gate
	})
	for _, g := range gates {
		key := g.Venue + "/" + g.Gate
		v := Gate{GateState: g, Key: key, Last: d.last[key]}
		if c := d.totals[key]; c != nil {
			v.Admitted, v.Denied = c.admitted, c.denied
		}
		for m := cur - int64(d.o.Minutes) + 1; m <= cur; m++ {
			c := d.minutes[key][m]
			if c == nil {
				c = &count{}
			}
			v.PerMinute = append(v.PerMinute, c.admitted+c.denied)
			v.AdmitsPerMinute = append(v.AdmitsPerMinute, c.admitted)
		}
		st.Gates = append(st.Gates, v)
		st.Totals.Gates++
		st.Totals.Entries += g.Entries
		st.Totals.Admitted += v.Admitted
		st.Totals.Denied += v.Denied
		st.Alerts = append(st.Alerts, d.alerts(g, key, now)...)
		if g.Online {
			st.Totals.Online++
		}
	}
	st.Totals.Conflicts = len(conflicts)
	for i := len(conflicts) - 1; i >= 0 && len(st.Conflicts) < 50; i-- {
		st.Conflicts = append(st.Conflicts, conflicts[i])
	}
	if st.Conflicts == nil {
		st.Conflicts = []centre.Conflict{}
	}
	for _, c := range conflicts {
		if now.Sub(c.DetectedAt) < time.Hour {
			st.Alerts = append(st.Alerts, Alert{Level: "critical", Gate: c.Second.Venue + "/" + c.Second.Gate,
				Text: fmt.Sprintf("ticket %s admitted twice (%s then %s)", c.Ticket, c.First.Gate, c.Second.Gate)})
		}
	}
	return st
}

func (d *Dashboard) alerts(g centre.GateState, key string, now time.Time) []Alert {
	var out []Alert
	switch {
	case !g.Online:
		out = append(out, Alert{Level: "critical", Gate: key, Text: "offline" + since(g.LastSeen, now)})
	case !g.LastSeen.IsZero() && now.Sub(g.LastSeen) > d.o.SilentAfter:
		out = append(out, Alert{Level: "warning", Gate: key, Text: "no heartbeat" + since(g.LastSeen, now)})
	}
	if g.Locked {
		out = append(out, Alert{Level: "warning", Gate: key, Text: "login locked by the operator (gatesync unlock-gate lets it in)"})
	}
	if g.Backlog > d.o.MaxBacklog {
		out = append(out, Alert{Level: "warning", Gate: key, Text: fmt.Sprintf("%d entries waiting in the gate's outbox", g.Backlog)})
	}
	if off := time.Duration(g.ClockOffsetMs) * time.Millisecond; off > d.o.MaxClockOffset || -off > d.o.MaxClockOffset {
		out = append(out, Alert{Level: "warning", Gate: key, Text: fmt.Sprintf("clock %s off the centre's: rotating codes may be refused", off.Abs().Round(100*time.Millisecond))})
	}
	return out
}

// maxAlerts bounds the booked alerts the page shows.
const maxAlerts = 50

// bookedAlerts are the centre's alerts of the last hour, newest first, at
// most maxAlerts: an admission that did not verify is critical, the rest
// warnings.
func bookedAlerts(as []centre.Alert, now time.Time) []Alert {
	var out []Alert
	for i := len(as) - 1; i >= 0 && len(out) < maxAlerts && now.Sub(as[i].At) < time.Hour; i-- {
		a := as[i]
		level := "warning"
		if a.Kind == centre.AlertUnproven || a.Kind == centre.AlertOtherEvent {
			level = "critical"
		}
		text := a.Kind + ": " + a.Detail
		if a.Ticket != "" {
			text = fmt.Sprintf("%s (ticket %s, entry %s)", text, a.Ticket, a.EntryID)
		}
		out = append(out, Alert{Level: level, Gate: a.Venue + "/" + a.Gate, Text: text})
	}
	return out
}

func since(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	return fmt.Sprintf(" since %s (%s ago)", t.Format("15:04:05"), now.Sub(t).Round(time.Second))
}

// publish stores the latest state and hands it to every open stream; a
// slow stream skips to the newest state.
func (d *Dashboard) publish(body []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state = body
	d.readyO.Do(func() { close(d.ready) })
	for ch := range d.subs {
		select {
		case <-ch:
		default:
		}
		ch <- body
	}
}

func (d *Dashboard) subscribe() (chan []byte, []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch := make(chan []byte, 1)
	d.subs[ch] = struct{}{}
	return ch, d.state
}

func (d *Dashboard) unsubscribe(ch chan []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.subs, ch)
}

// Register adds the dashboard's routes to mux:
//
//	GET /dashboard/             the page (?token=T once sets the session cookie)
//	GET /dashboard/events       server-sent events: "state", a State as JSON
//	GET /dashboard/state.json   the latest State
//	GET /dashboard/assets/...   script and style
func (d *Dashboard) Register(mux *http.ServeMux) {
	sub, _ := fs.Sub(assets, "assets")
	mux.Handle("GET /dashboard/assets/", http.StripPrefix("/dashboard/assets/", http.FileServerFS(sub)))
	mux.Handle("GET /dashboard", http.RedirectHandler("/dashboard/", http.StatusMovedPermanently))
	mux.HandleFunc("GET /dashboard/{$}", d.page)
	mux.HandleFunc("GET /dashboard/events", d.guard(d.events))
	mux.HandleFunc("GET /dashboard/state.json", d.guard(d.stateJSON))
}

const cookieName = "gatesync_dashboard"

func (d *Dashboard) authorized(r *http.Request) bool {
	if got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return subtle.ConstantTimeCompare([]byte(got), []byte(d.o.Token)) == 1
	}
	c, err := r.Cookie(cookieName)
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(d.session)) == 1
}

func (d *Dashboard) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !d.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="gatesync"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, `{"error":"missing or wrong bearer token or dashboard cookie: open /dashboard/?token=TOKEN (DIR/api.token) once"}`)
			return
		}
		h(w, r)
	}
}

const csp = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func (d *Dashboard) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if tok := r.URL.Query().Get("token"); tok != "" {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(d.o.Token)) != 1 {
			d.denied(w, "that token is not this centre's API token (DIR/api.token)")
			return
		}
		http.SetCookie(w, &http.Cookie{Name: cookieName, Value: d.session, Path: "/dashboard/", HttpOnly: true,
			SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
		http.Redirect(w, r, "/dashboard/", http.StatusSeeOther) // the token leaves the address bar and history
		return
	}
	if !d.authorized(r) {
		d.denied(w, "open /dashboard/?token=TOKEN once, with the token in the centre's DIR/api.token")
		return
	}
	b, _ := assets.ReadFile("assets/dashboard.html")
	w.Header().Set("Content-Security-Policy", csp)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b)
}

func (d *Dashboard) denied(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	fmt.Fprintf(w, "<!doctype html><title>gatesync dashboard</title><p>%s</p>\n", msg)
}

func (d *Dashboard) stateJSON(w http.ResponseWriter, r *http.Request) {
	select {
	case <-d.ready:
	case <-r.Context().Done():
		return
	case <-time.After(5 * time.Second):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, `{"error":"the dashboard has not read the books yet"}`)
		return
	}
	d.mu.Lock()
	b := d.state
	d.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func (d *Dashboard) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no") // a proxy must not hold events back
	ch, cur := d.subscribe()
	defer d.unsubscribe(ch)
	send := func(b []byte) bool {
		if _, err := fmt.Fprintf(w, "event: state\ndata: %s\n\n", b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	fmt.Fprint(w, "retry: 2000\n\n")
	if cur != nil && !send(cur) {
		return
	}
	rc.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-d.done:
			return
		case b := <-ch:
			if !send(b) {
				return
			}
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
