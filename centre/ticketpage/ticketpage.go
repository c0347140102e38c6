// Package ticketpage serves the ticket holder's web page: a mobile page at
// /t/{ticket}?k=ACCESS that shows the ticket's QR code.
//
// A static ticket's page shows its G1: code (a PNG rendered here). A
// rotating ticket's page makes an Ed25519 device key in the browser
// (WebCrypto; the private half never leaves the phone and is stored
// non-extractable in IndexedDB), registers the public half, which binds
// the ticket to it (centre.ReissueWithDevice: the serial rises, so codes
// of any earlier phone are refused), and then signs a fresh G2: code every
// 15 s without the network (docs/token.md §3).
//
// ACCESS is HMAC-SHA256(link key, ticket id), so only the organiser, who
// holds the link key, can make a ticket's link; the page answers 403 to
// anyone else. Links are fetched with the API token:
// GET /api/v1/tickets/{id}/link. See docs/web.md.
package ticketpage

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"image/png"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/qr"
	"github.com/gated-dev/gated/verify"
)

//go:embed assets
var assets embed.FS

// KeyFile holds the link key in a centre directory.
const KeyFile = "ticketpage.key"

// Tickets is what the page needs of the centre; *centre.Centre has it.
// Implementations must be safe for concurrent use.
type Tickets interface {
	Ticket(id verify.TicketID) (*centre.Ticket, error)
	ReissueWithDevice(id verify.TicketID, dev ed25519.PublicKey) (*centre.Ticket, error)
}

// Options configure a Handler. Key or Dir and Token are required.
type Options struct {
	// Key is the link key (at least 32 bytes). When nil it is read from
	// Dir/ticketpage.key, which is created if missing.
	Key []byte
	// Dir is the centre directory that holds KeyFile.
	Dir string
	// Token is the API bearer token that guards the link route.
	Token string
	// Logger gets bindings and refusals (default: discard).
	Logger *slog.Logger
	// BindEvery is how often one ticket may be bound to a phone (default
	// 30s). Each binding raises the serial, which stops at 65535, and
	// sends a delta to every gate: a leaked link must not be able to spin it.
	BindEvery time.Duration
	// Now is the clock of BindEvery (default time.Now).
	Now func() time.Time
}

// Handler serves the ticket page. Register its routes on a mux.
type Handler struct {
	t     Tickets
	key   []byte
	token string
	log   *slog.Logger
	page  *template.Template
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	bound map[verify.TicketID]time.Time // last binding of each ticket, within every
}

// New returns the ticket page of t.
func New(t Tickets, o Options) (*Handler, error) {
	if o.Key == nil {
		k, err := LoadKey(o.Dir)
		if err != nil {
			return nil, err
		}
		o.Key = k
	}
	if len(o.Key) < 32 {
		return nil, errors.New("ticket page: the link key must be at least 32 bytes")
	}
	if o.Token == "" {
		return nil, errors.New("ticket page: no API token to guard the link route")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	page, err := template.ParseFS(assets, "assets/ticket.html")
	if err != nil {
		return nil, err
	}
	if o.BindEvery <= 0 {
		o.BindEvery = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Handler{t: t, key: o.Key, token: o.Token, log: o.Logger, page: page, every: o.BindEvery, now: o.Now,
		bound: map[verify.TicketID]time.Time{}}, nil
}

// LoadKey reads dir's link key, creating a random one (0600) if missing.
// Deleting the file and restarting invalidates every ticket link.
func LoadKey(dir string) ([]byte, error) {
	if dir == "" {
		return nil, errors.New("ticket page: no centre directory for the link key")
	}
	path := filepath.Join(dir, KeyFile)
	if b, err := os.ReadFile(path); err == nil {
		k, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(k) < 32 {
			return nil, fmt.Errorf("%s: want 64 hex characters; delete it to make a new key (every ticket link changes)", path)
		}
		return k, nil
	}
	k := make([]byte, 32)
	rand.Read(k)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return LoadKey(dir) // another gatesync made it first
	}
	if err != nil {
		return nil, fmt.Errorf("write ticket link key: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(k) + "\n"); err != nil {
		f.Close()
		return nil, err
	}
	return k, f.Close()
}

// Access returns the access secret of a ticket's link.
func (h *Handler) Access(id verify.TicketID) string {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte("gated/ticket-page/v1\x00"))
	m.Write(id[:])
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

// Path returns the path of a ticket's page, access secret included.
func (h *Handler) Path(id verify.TicketID) string { return "/t/" + id.String() + "?k=" + h.Access(id) }

// Register adds the page's routes to mux:
//
//	GET  /t/{id}?k=K                 the page
//	GET  /t/{id}/qr.png?k=K          a static ticket's QR code
//	POST /t/{id}/device?k=K          {"public_key": base64} binds a rotating ticket to the phone
//	GET  /t-assets/...               scripts and style
//	GET  /t/sw.js                    the service worker that keeps pages for offline use
//	GET  /api/v1/tickets/{id}/link   (bearer token) the page's link
func (h *Handler) Register(mux *http.ServeMux) {
	sub, _ := fs.Sub(assets, "assets")
	mux.Handle("GET /t-assets/", http.StripPrefix("/t-assets/", http.FileServerFS(sub)))
	mux.HandleFunc("GET /t/sw.js", serveWorker)
	mux.HandleFunc("GET /t/{id}", h.ticket(h.servePage))
	mux.HandleFunc("GET /t/{id}/qr.png", h.ticket(h.serveQR))
	mux.HandleFunc("POST /t/{id}/device", h.ticket(h.bindDevice))
	mux.HandleFunc("GET /api/v1/tickets/{id}/link", h.link)
}

// serveWorker serves sw.js from /t/, so its scope covers the pages.
func serveWorker(w http.ResponseWriter, _ *http.Request) {
	b, _ := assets.ReadFile("assets/sw.js")
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(b)
}

// ticket checks the link and loads the ticket for fn.
func (h *Handler) ticket(fn func(http.ResponseWriter, *http.Request, *centre.Ticket)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		id, err := verify.ParseTicketID(r.PathValue("id"))
		if err != nil {
			h.fail(w, r, http.StatusNotFound, "no such ticket: the link is incomplete")
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("k")), []byte(h.Access(id))) != 1 {
			h.log.Info("ticket page refused", "ticket", id, "remote", r.RemoteAddr)
			h.fail(w, r, http.StatusForbidden, "this link does not open this ticket: use the link you were sent, complete with its k= part")
			return
		}
		t, err := h.t.Ticket(id)
		if errors.Is(err, centre.ErrNoTicket) {
			h.fail(w, r, http.StatusNotFound, "no such ticket")
			return
		}
		if err != nil {
			h.log.Error("read ticket", "ticket", id, "err", err)
			h.fail(w, r, http.StatusInternalServerError, "the ticket cannot be read now; try again shortly")
			return
		}
		fn(w, r, t)
	}
}

// fail answers JSON to scripts and a short page to people.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if r.Method != http.MethodGet || strings.HasSuffix(r.URL.Path, ".png") {
		writeJSON(w, code, map[string]string{"error": msg})
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, "<!doctype html><meta name=viewport content=\"width=device-width\"><title>Ticket</title><p>%s</p>\n", template.HTMLEscapeString(msg))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type pageData struct {
	ID, Access, Event, Zone, Kind, Device string
	Serial                                uint16
	NotBefore, NotAfter                   string
}

func (h *Handler) servePage(w http.ResponseWriter, r *http.Request, t *centre.Ticket) {
	d := pageData{ID: t.ID.String(), Access: h.Access(t.ID), Event: t.Event, Zone: t.Zone, Serial: t.Serial, Kind: "static"}
	if len(t.DeviceKey) > 0 {
		d.Kind, d.Device = "rotating", base64.StdEncoding.EncodeToString(t.DeviceKey)
	}
	if !t.NotBefore.IsZero() {
		d.NotBefore = t.NotBefore.Format(time.RFC3339)
	}
	if !t.NotAfter.IsZero() {
		d.NotAfter = t.NotAfter.Format(time.RFC3339)
	}
	w.Header().Set("Content-Security-Policy", csp)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := h.page.Execute(w, d); err != nil {
		h.log.Error("render ticket page", "err", err)
	}
}

func (h *Handler) serveQR(w http.ResponseWriter, r *http.Request, t *centre.Ticket) {
	if len(t.DeviceKey) > 0 {
		h.fail(w, r, http.StatusConflict, "this ticket is rotating: its code is made on the phone, not here")
		return
	}
	img, err := qr.Image(t.Code(), 512)
	if err != nil {
		h.fail(w, r, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "image/png")
	png.Encode(w, img)
}

// DeviceRequest is the body of POST /t/{id}/device.
type DeviceRequest struct {
	PublicKey string `json:"public_key"` // raw 32-byte Ed25519 key, base64
}

// DeviceResponse is its answer: what the phone needs to make codes.
type DeviceResponse struct {
	Ticket     string `json:"ticket"`
	Serial     uint16 `json:"serial"`
	Credential string `json:"credential"` // base64
}

func (h *Handler) bindDevice(w http.ResponseWriter, r *http.Request, t *centre.Ticket) {
	if len(t.DeviceKey) == 0 {
		h.fail(w, r, http.StatusConflict, "this ticket is static: its QR code is on the page and is bound to no phone")
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		h.fail(w, r, http.StatusUnsupportedMediaType, "send the device key as JSON (Content-Type: application/json)")
		return
	}
	var req DeviceRequest
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.fail(w, r, http.StatusRequestEntityTooLarge, "the request is larger than 4096 bytes")
			return
		}
		h.fail(w, r, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	if _, err := d.Token(); err != io.EOF {
		h.fail(w, r, http.StatusBadRequest, "request body: one JSON object, nothing after it")
		return
	}
	key, err := base64.StdEncoding.DecodeString(req.PublicKey)
	if err != nil || len(key) != ed25519.PublicKeySize {
		h.fail(w, r, http.StatusBadRequest, "public_key: want a 32-byte Ed25519 public key in base64")
		return
	}
	if wait := h.claim(t.ID); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds()+1)))
		h.fail(w, r, http.StatusTooManyRequests, fmt.Sprintf("this ticket was bound to a phone moments ago; try again in %d s", int(wait.Seconds()+1)))
		return
	}
	nt, err := h.t.ReissueWithDevice(t.ID, key)
	if err != nil {
		h.log.Error("bind ticket to device", "ticket", t.ID, "err", err)
		h.fail(w, r, http.StatusInternalServerError, "the ticket could not be bound to this phone; try again shortly")
		return
	}
	h.log.Info("ticket bound to a phone", "ticket", t.ID, "serial", nt.Serial, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, DeviceResponse{Ticket: nt.ID.String(), Serial: nt.Serial, Credential: base64.StdEncoding.EncodeToString(nt.Credential)})
}

// claim records a binding of id now, or returns how long until one is
// allowed.
func (h *Handler) claim(id verify.TicketID) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	if last, ok := h.bound[id]; ok && now.Sub(last) < h.every {
		return h.every - now.Sub(last)
	}
	if len(h.bound) > 4096 {
		for k, at := range h.bound {
			if now.Sub(at) >= h.every {
				delete(h.bound, k)
			}
		}
	}
	h.bound[id] = now
	return 0
}

// LinkResponse is the body of GET /api/v1/tickets/{id}/link.
type LinkResponse struct {
	Ticket string `json:"ticket"`
	Path   string `json:"path"` // the page, relative to gatesync's HTTP address
}

func (h *Handler) link(w http.ResponseWriter, r *http.Request) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(h.token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gatesync"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong bearer token (see DIR/api.token)"})
		return
	}
	id, err := verify.ParseTicketID(r.PathValue("id"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if _, err := h.t.Ticket(id); errors.Is(err, centre.ErrNoTicket) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		return
	} else if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, LinkResponse{Ticket: id.String(), Path: h.Path(id)})
}
