// Package sales is the back end a WeChat mini program calls to sell
// tickets: sign-in with a wx.login code, events and stock, orders that hold
// stock for a while, WeChat Pay (JSAPI) with verified, idempotent
// notifications and reconciliation, tickets issued through the centre,
// real-name binding, refunds and transfers.
//
// Every route answers JSON; every refusal is {"error": code, "message":
// text} with an HTTP status the mini program can branch on. Routes (all
// but login, events and the WeChat Pay notifications need a bearer token
// from login):
//
//	POST /api/v1/login                      {"code"} -> {"token","expires_at"}
//	GET  /api/v1/events                     events, tiers, prices, stock
//	GET  /api/v1/events/{id}
//	POST /api/v1/orders                     hold stock -> order
//	GET  /api/v1/orders                     my orders
//	GET  /api/v1/orders/{no}
//	POST /api/v1/orders/{no}/pay            -> wx.requestPayment parameters
//	GET  /api/v1/tickets                    my tickets
//	POST /api/v1/tickets/{id}/refund
//	POST /api/v1/tickets/{id}/transfer      -> {"code"} for the recipient
//	POST /api/v1/transfers/{code}/accept    {"holder","device_key"}
//	POST /api/v1/wxpay/notify               WeChat Pay payment notifications
//	POST /api/v1/wxpay/refund-notify        WeChat Pay refund notifications
//
// The store is the only truth: a payment is recorded in the transaction
// that decides it, before tickets are issued, so a crash between the two
// leaves a paid order that reconciliation issues.
package sales

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gated-dev/gated/centre/realname"
	"github.com/gated-dev/gated/centre/wxpay"
	"github.com/gated-dev/gated/kv"
)

// Payments is the part of WeChat Pay the server uses; *wxpay.Pay has it.
type Payments interface {
	Prepay(ctx context.Context, r wxpay.PrepayRequest) (*wxpay.RequestPayment, error)
	QueryOrder(ctx context.Context, outTradeNo string) (*wxpay.Transaction, error)
	CloseOrder(ctx context.Context, outTradeNo string) error
	Refund(ctx context.Context, r wxpay.RefundRequest) (*wxpay.Refund, error)
	ParsePaymentNotify(r *http.Request) (*wxpay.Transaction, error)
	ParseRefundNotify(r *http.Request) (*wxpay.RefundNotice, error)
}

// Login exchanges a wx.login code; *wxpay.LoginClient has it.
type Login interface {
	Code2Session(ctx context.Context, code string) (wxpay.Session, error)
}

// Server is the sales API. It is an http.Handler; Run drives its
// background work (expiring holds, reconciliation, purging).
type Server struct {
	cfg   Config
	st    *Store
	iss   Issuer
	pay   Payments
	login Login
	vault *realname.Vault
	log   *slog.Logger
	mux   *http.ServeMux

	userLim, addrLim *limiter
	orderLocks       keyedMutex
}

// NewServer checks cfg, sets up the stock of its events in st and returns
// the server. log may be nil.
func NewServer(cfg Config, st *Store, iss Issuer, pay Payments, login Login, log *slog.Logger) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sales config: %w", err)
	}
	if st == nil || iss == nil || pay == nil || login == nil {
		return nil, errors.New("sales: store, issuer, payments and login are all required")
	}
	for _, ev := range cfg.Events {
		if b, ok := iss.(DeviceKeyBinder); ev.Rotating && !(ok && b.BindsDeviceKeys()) {
			return nil, fmt.Errorf("sales config: event %q has rotating codes, but the issuer cannot bind tickets to the buyer's device key", ev.ID)
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, st: st, iss: iss, pay: pay, login: login, log: log.With("component", "sales"),
		userLim: newLimiter(cfg.UserRate, cfg.UserBurst), addrLim: newLimiter(cfg.AddrRate, cfg.AddrBurst)}
	if len(cfg.RealNameHMACKey) > 0 {
		v, err := realname.NewVault(cfg.RealNameHMACKey, cfg.RealNameKey)
		if err != nil {
			return nil, fmt.Errorf("sales config: %w", err)
		}
		s.vault = v
	}
	if s.cfg.StockShards == 0 {
		s.cfg.StockShards = st.defaultShards()
	}
	if err := st.syncStock(cfg.Events, s.cfg.StockShards); err != nil {
		return nil, err
	}
	s.mux = http.NewServeMux()
	s.Register(s.mux)
	// Only when serving alone: mounted next to the centre's API, the rest
	// of the tree is the centre's.
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, ErrorBody{Error: "not_found", Message: fmt.Sprintf("There is no %s %s in this API.", r.Method, r.URL.Path)})
	})
	return s, nil
}

// Register adds the routes to mux, so they can share one with the centre's
// API (whose patterns they do not overlap).
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/login", s.handle(s.loginHandler, false, true))
	mux.HandleFunc("GET /api/v1/events", s.handle(s.listEvents, false, false))
	mux.HandleFunc("GET /api/v1/events/{id}", s.handle(s.getEvent, false, false))
	mux.HandleFunc("POST /api/v1/orders", s.handle(s.createOrder, true, true))
	mux.HandleFunc("GET /api/v1/orders", s.handle(s.listOrders, true, false))
	mux.HandleFunc("GET /api/v1/orders/{no}", s.handle(s.getOrder, true, false))
	mux.HandleFunc("POST /api/v1/orders/{no}/pay", s.handle(s.payOrder, true, true))
	mux.HandleFunc("GET /api/v1/tickets", s.handle(s.listTickets, true, false))
	mux.HandleFunc("POST /api/v1/tickets/{id}/refund", s.handle(s.refundTicket, true, true))
	mux.HandleFunc("POST /api/v1/tickets/{id}/transfer", s.handle(s.offerTransfer, true, true))
	mux.HandleFunc("POST /api/v1/transfers/{code}/accept", s.handle(s.acceptTransfer, true, true))
	mux.HandleFunc("POST /api/v1/wxpay/notify", s.paymentNotify)
	mux.HandleFunc("POST /api/v1/wxpay/refund-notify", s.refundNotify)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Run expires holds, reconciles and purges until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	sweep := time.NewTicker(time.Duration(s.cfg.SweepEvery))
	rec := time.NewTicker(time.Duration(s.cfg.ReconcileEvery))
	purge := time.NewTicker(time.Hour)
	defer sweep.Stop()
	defer rec.Stop()
	defer purge.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sweep.C:
			if err := s.SweepHolds(ctx); err != nil {
				s.log.Error("sweep holds", "err", err)
			}
		case <-rec.C:
			if err := s.Reconcile(ctx); err != nil {
				s.log.Error("reconcile", "err", err)
			}
		case <-purge.C:
			if _, err := s.PurgeRealNames(); err != nil {
				s.log.Error("purge real names", "err", err)
			}
			if _, err := s.PurgeSessions(); err != nil {
				s.log.Error("purge sessions", "err", err)
			}
		}
	}
}

// Problem is a refusal the buyer sees: an HTTP status, a stable code the
// mini program branches on, and a message it can show.
type Problem struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (p *Problem) Error() string { return p.Code + ": " + p.Message }

func problem(status int, code, format string, a ...any) *Problem {
	return &Problem{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

// ErrorBody is the JSON of every refusal.
type ErrorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

type ctxKey struct{}

// user returns the signed-in buyer's openid.
func user(r *http.Request) string { s, _ := r.Context().Value(ctxKey{}).(string); return s }

func (s *Server) handle(fn func(http.ResponseWriter, *http.Request) error, auth, limited bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := func() error {
			now := s.cfg.Now()
			if limited {
				if ok, wait := s.addrLim.allow("a:"+s.addrOf(r), now); !ok {
					return rateLimited(wait, "Too many requests from your network")
				}
			}
			if auth {
				openid, err := s.session(r)
				if err != nil {
					return err
				}
				if limited {
					if ok, wait := s.userLim.allow("u:"+openid, now); !ok {
						return rateLimited(wait, "Too many purchase requests from your account")
					}
				}
				r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, openid))
			}
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			return fn(w, r)
		}()
		if err != nil {
			s.writeErr(w, r, err)
		}
	}
}

func rateLimited(wait time.Duration, what string) *Problem {
	secs := int(wait.Seconds() + 0.999)
	if secs < 1 {
		secs = 1
	}
	return &Problem{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Message: fmt.Sprintf("%s; please wait %d s and try again.", what, secs), RetryAfter: time.Duration(secs) * time.Second}
}

func (s *Server) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var p *Problem
	if !errors.As(err, &p) {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		p = problem(http.StatusInternalServerError, "internal",
			"Something went wrong on our side. Nothing you paid for is lost; please try again in a moment.")
	}
	if p.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(p.RetryAfter/time.Second)))
	}
	writeJSON(w, p.Status, ErrorBody{Error: p.Code, Message: p.Message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func decode(r *http.Request, v any) error {
	d := json.NewDecoder(r.Body)
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		detail := "it is not valid JSON of the expected shape"
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			detail = "it has the unknown field " + f
		}
		return problem(http.StatusBadRequest, "bad_request", "The request body is not what this endpoint expects: %s.", detail)
	}
	return nil
}

// addrOf is the client's address for rate limiting: from the trusted
// proxy's header when one is configured, else the TCP peer.
func (s *Server) addrOf(r *http.Request) string {
	if h := s.cfg.ClientIPHeader; h != "" {
		v := r.Header.Values(h)
		if len(v) > 0 {
			parts := strings.Split(v[len(v)-1], ",")
			if a := strings.TrimSpace(parts[len(parts)-1]); a != "" {
				return a
			}
		}
	}
	return clientAddr(r)
}

// clientAddr is the connection's peer address.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// --- sessions

func tokenKey(token string) []byte { h := sha256.Sum256([]byte(token)); return h[:] }

func (s *Server) session(r *http.Request) (string, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return "", problem(http.StatusUnauthorized, "unauthenticated", "Sign in first: call wx.login and POST its code to /api/v1/login.")
	}
	var sess Session
	err := s.st.db.View(r.Context(), func(tx kv.Tx) error { return getJSON(tx, bSessions, tokenKey(tok), &sess) })
	if errors.Is(err, errNotFound) || err == nil && !s.cfg.Now().Before(sess.Expires) {
		return "", problem(http.StatusUnauthorized, "session_expired", "Your sign-in has expired or is unknown; sign in again.")
	}
	if err != nil {
		return "", err
	}
	return sess.OpenID, nil
}

// LoginResponse is the answer to a sign-in.
type LoginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) loginHandler(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Code string `json:"code"`
	}
	if err := decode(r, &body); err != nil {
		return err
	}
	sess, err := s.login.Code2Session(r.Context(), body.Code)
	switch {
	case errors.Is(err, wxpay.ErrInvalidCode):
		return problem(http.StatusBadRequest, "invalid_code", "This WeChat login code is invalid, expired or already used; call wx.login again.")
	case errors.Is(err, wxpay.ErrRateLimited):
		return &Problem{Status: http.StatusTooManyRequests, Code: "wechat_rate_limited",
			Message: "WeChat is limiting sign-ins for this account; please wait a minute and try again.", RetryAfter: time.Minute}
	case errors.Is(err, wxpay.ErrHighRisk):
		return problem(http.StatusForbidden, "high_risk_user", "WeChat has flagged this account as high risk, so it cannot buy tickets here.")
	case err != nil:
		s.log.Warn("jscode2session failed", "err", err)
		return problem(http.StatusBadGateway, "wechat_unavailable", "WeChat sign-in is not answering; please try again shortly.")
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	tok := base64.RawURLEncoding.EncodeToString(raw)
	exp := s.cfg.Now().Add(time.Duration(s.cfg.SessionTTL)).UTC()
	// The token itself is never stored, only its hash: a copy of the
	// database signs no one in.
	err = s.st.db.Batch(bg, func(tx kv.Tx) error {
		return putJSON(tx, bSessions, tokenKey(tok), Session{OpenID: sess.OpenID, Expires: exp})
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, LoginResponse{Token: tok, ExpiresAt: exp})
	return nil
}

// --- events

// EventView is an event as the mini program lists it.
type EventView struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	DoorsOpen time.Time  `json:"doors_open"`
	Ends      time.Time  `json:"ends"`
	RealName  bool       `json:"real_name"`
	Rotating  bool       `json:"rotating"`
	Types     []TypeView `json:"ticket_types"`
}

// TypeView is a ticket type with its tiers.
type TypeView struct {
	ID    string     `json:"id"`
	Name  string     `json:"name"`
	Zone  string     `json:"zone,omitempty"`
	Tiers []TierView `json:"tiers"`
}

// TierView is a tier with its remaining stock.
type TierView struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Price     int64  `json:"price_fen"`
	Remaining int    `json:"remaining"`
	OnSale    bool   `json:"on_sale"`
}

func (s *Server) eventView(tx kv.Tx, ev *Event, now time.Time) (EventView, error) {
	v := EventView{ID: ev.ID, Name: ev.Name, DoorsOpen: ev.DoorsOpen, Ends: ev.Ends, RealName: ev.RealName, Rotating: ev.Rotating}
	for _, tt := range ev.Types {
		t := TypeView{ID: tt.ID, Name: tt.Name, Zone: tt.Zone}
		for _, tr := range tt.Tiers {
			rem, err := totalStock(tx, key(ev.ID, tt.ID, tr.ID))
			if err != nil {
				return v, err
			}
			t.Tiers = append(t.Tiers, TierView{ID: tr.ID, Name: tr.Name, Price: tr.Price, Remaining: int(rem),
				OnSale: onSale(&tr, now) && now.Before(ev.Ends)})
		}
		v.Types = append(v.Types, t)
	}
	return v, nil
}

func onSale(tr *Tier, now time.Time) bool {
	return (tr.OnSale.IsZero() || !now.Before(tr.OnSale)) && (tr.OffSale.IsZero() || now.Before(tr.OffSale))
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request) error {
	var out []EventView
	now := s.cfg.Now()
	err := s.st.db.View(r.Context(), func(tx kv.Tx) error {
		out = []EventView{}
		for i := range s.cfg.Events {
			v, err := s.eventView(tx, &s.cfg.Events[i], now)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getEvent(w http.ResponseWriter, r *http.Request) error {
	ev := s.cfg.event(r.PathValue("id"))
	if ev == nil {
		return problem(http.StatusNotFound, "unknown_event", "There is no event %q on sale.", r.PathValue("id"))
	}
	var v EventView
	err := s.st.db.View(r.Context(), func(tx kv.Tx) (err error) { v, err = s.eventView(tx, ev, s.cfg.Now()); return err })
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// keyedMutex serialises work on one key (an order being issued) without a
// global lock.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
