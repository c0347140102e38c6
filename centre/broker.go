package centre

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gated-dev/gated/wire"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// EmbeddedOptions configure the broker inside gatesync.
type EmbeddedOptions struct {
	// Addr is the MQTT listen address (default 127.0.0.1:1883).
	Addr string
	// TLS, when set, makes the listener TLS (client certificates as its
	// ClientAuth says).
	TLS *tls.Config
	// Auth checks a gate's username (its gate id) and password and returns
	// its venue. Required unless AllowAnonymous.
	Auth func(user, pass string) (venue string, ok bool)
	// CertAuth, with a TLS listener that verifies client certificates,
	// takes a certificate's common name as the gate id and returns the
	// gate's venue (a gate added with add-gate). Such a gate needs no
	// password.
	CertAuth func(gate string) (venue string, ok bool)
	// AllowAnonymous lets clients without a username connect, with no
	// topic restrictions: for development only.
	AllowAnonymous bool
	// Logger gets the broker's own warnings (default: discard).
	Logger *slog.Logger
}

// Embedded is an MQTT broker in this process (mochi-mqtt) with the same
// rules as deploy/mosquitto: a gate authenticates as its gate id and may
// publish only its own entries, status and hello topics, and read only its
// own ack and sync topics and its venue's whitelist and live topics. It is
// a Bus for the sync server through the broker's inline client.
type Embedded struct {
	srv  *mqtt.Server
	hook *aclHook
	addr string
	subN atomic.Int32
}

// StartEmbedded starts the broker listening on o.Addr.
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:1883"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Auth == nil && !o.AllowAnonymous {
		return nil, errors.New("embedded broker: no authentication and anonymous access not allowed")
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = wire.MaxMessage + 1024
	caps.MaximumClientWritesPending = 16 * 1024 // a snapshot is a few thousand chunks
	// A gate away keeps its session (and queued messages) for a week, not
	// forever: a removed or replaced box must not hold memory for good.
	// Nothing depends on the queue for correctness: a returning gate
	// resubscribes and catches up on deltas and the uses log by hello.
	caps.MaximumSessionExpiryInterval = 7 * 24 * 3600
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: slog.New(boundedLog{o.Logger.Handler()})})
	hook := &aclHook{auth: o.Auth, certAuth: o.CertAuth, anon: o.AllowAnonymous, log: o.Logger, ids: map[*mqtt.Client]gateID{}}
	if err := srv.AddHook(hook, nil); err != nil {
		return nil, err
	}
	l := listeners.NewTCP(listeners.Config{ID: "gates", Address: o.Addr, TLSConfig: o.TLS})
	if err := srv.AddListener(l); err != nil {
		return nil, fmt.Errorf("embedded broker: listen on %s: %w", o.Addr, err)
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, err
	}
	return &Embedded{srv: srv, hook: hook, addr: l.Address()}, nil
}

// Close stops the broker.
func (e *Embedded) Close() error { return e.srv.Close() }

// Publish publishes at QoS 1 through the inline client.
func (e *Embedded) Publish(topic string, payload []byte, retain bool) error {
	return e.srv.Publish(topic, payload, retain, 1)
}

// Subscribe subscribes the inline client. fn runs on the publishing
// client's goroutine, so blocking in it slows that client down.
func (e *Embedded) Subscribe(filters []string, fn func(string, []byte)) error {
	for _, f := range filters {
		id := int(e.subN.Add(1))
		err := e.srv.Subscribe(f, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
			fn(pk.TopicName, bytes.Clone(pk.Payload))
		})
		if err != nil {
			return err
		}
	}
	return nil
}

type aclHook struct {
	mqtt.HookBase
	auth     func(user, pass string) (string, bool)
	certAuth func(gate string) (string, bool)
	anon     bool
	log      *slog.Logger

	mu  sync.Mutex
	ids map[*mqtt.Client]gateID // a connected client -> the gate it authenticated as
}

type gateID struct{ venue, gate string }

// GateClientID is the one MQTT client id a gate may connect with: its login
// is bound to it, so no login can take over another client's session (a
// takeover drops the other's queued messages and subscriptions).
func GateClientID(venue, gate string) string { return "gated-" + venue + "-" + gate }

func (h *aclHook) ID() string { return "gated-acl" }

func (h *aclHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnDisconnect || b == mqtt.OnPacketRead
}

func (h *aclHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	id, ok, why := h.authenticate(cl, pk)
	if !ok {
		// A refused login touches no state: the client id may be another,
		// connected client's.
		h.log.Warn("broker login refused", "why", why, "username", clip(string(pk.Connect.Username)), "client", clip(cl.ID),
			"remote", cl.Net.Remote, "listener", cl.Net.Listener)
		return false
	}
	if id.gate != "" {
		h.mu.Lock()
		h.ids[cl] = id
		h.mu.Unlock()
	}
	return true
}

func (h *aclHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.mu.Lock()
	delete(h.ids, cl)
	h.mu.Unlock()
}

func (h *aclHook) authenticate(cl *mqtt.Client, pk packets.Packet) (gateID, bool, string) {
	id, ok, why := h.login(cl, pk)
	if ok && id.gate != "" && cl.ID != GateClientID(id.venue, id.gate) {
		return id, false, "client id is not " + GateClientID(id.venue, id.gate) + ", the only one this gate's login may use"
	}
	// mochi publishes a will without an ACL check: a will on any topic but
	// the gate's own would be a publish around the ACL.
	if ok && id.gate != "" && pk.Connect.WillFlag && !GateMayWrite(id.venue, id.gate, pk.Connect.WillTopic) {
		return id, false, "will on topic " + clip(pk.Connect.WillTopic) + ", which this gate may not publish"
	}
	return id, ok, why
}

func (h *aclHook) login(cl *mqtt.Client, pk packets.Packet) (gateID, bool, string) {
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok && h.certAuth != nil {
		// The listener verified the chain (RequireAndVerifyClientCert).
		if cs := tc.ConnectionState(); len(cs.VerifiedChains) > 0 && len(cs.PeerCertificates) > 0 {
			gate := cs.PeerCertificates[0].Subject.CommonName
			if venue, ok := h.certAuth(gate); ok {
				return gateID{venue, gate}, true, ""
			}
		}
	}
	user := string(pk.Connect.Username)
	if user == "" {
		return gateID{}, h.anon, "no username, and anonymous access is off"
	}
	if h.auth == nil {
		return gateID{}, false, "no gate logins on this broker"
	}
	venue, ok := h.auth(user, string(pk.Connect.Password))
	return gateID{venue, user}, ok, "unknown or locked gate, or wrong password"
}

// GateMayWrite and GateMayRead are the ACL of a gate, shared by the
// embedded broker and the mosquitto example (deploy/mosquitto).
func GateMayWrite(venue, gate, topic string) bool {
	for _, k := range []string{wire.KindEntries, wire.KindStatus, wire.KindHello} {
		if topic == wire.GateTopic(venue, gate, k) {
			return true
		}
	}
	return false
}

// GateMayRead reports whether a gate may subscribe to topic (see
// GateMayWrite).
func GateMayRead(venue, gate, topic string) bool {
	return topic == wire.GateTopic(venue, gate, wire.KindAck) || topic == wire.GateTopic(venue, gate, wire.KindSync) ||
		topic == wire.VenueTopic(venue, wire.KindWhitelist) || topic == wire.VenueTopic(venue, wire.KindLive)
}

func (h *aclHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	id, ok := h.gate(cl)
	if !ok {
		return h.anon // anonymous clients, when allowed, are unrestricted
	}
	if write {
		return GateMayWrite(id.venue, id.gate, topic)
	}
	ok = GateMayRead(id.venue, id.gate, topic)
	if !ok {
		h.log.Warn("refused subscription", "username", id.gate, "client", clip(cl.ID), "remote", cl.Net.Remote, "topic", clip(topic))
	}
	return ok
}

func (h *aclHook) gate(cl *mqtt.Client) (gateID, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	id, ok := h.ids[cl]
	return id, ok
}

// OnPacketRead logs a publish the ACL is about to refuse, in one bounded
// line (never the payload: mochi's own line dumped it as decimal bytes, 3 MB
// for a refused 1 MiB publish; boundedLog drops that line).
func (h *aclHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || cl.Net.Inline {
		return pk, nil
	}
	if id, ok := h.gate(cl); ok && !GateMayWrite(id.venue, id.gate, pk.TopicName) {
		h.log.Warn("refused publish", "username", id.gate, "client", clip(cl.ID), "remote", cl.Net.Remote,
			"topic", clip(pk.TopicName), "bytes", len(pk.Payload))
	}
	return pk, nil
}

// Kick disconnects every client logged in as gate (a locked or removed
// login), and reports how many there were.
func (e *Embedded) Kick(gate string) int {
	e.hook.mu.Lock()
	var kick []*mqtt.Client
	for cl, id := range e.hook.ids {
		if id.gate == gate {
			kick = append(kick, cl)
		}
	}
	e.hook.mu.Unlock()
	for _, cl := range kick {
		e.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
	return len(kick)
}

// clip bounds what a client chose (a client id, a topic) before it is
// logged.
func clip(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// boundedLog is mochi's logger with every packet attribute reduced to its
// type, topic and size, and without the lines the ACL hook already logged
// with who sent them (a refused login or publish). Mochi's listeners log a
// connection that ended in an error with an empty message; it gets one.
type boundedLog struct{ slog.Handler }

func (b boundedLog) Handle(ctx context.Context, r slog.Record) error {
	msg := r.Message
	if msg == "" {
		msg = "client connection ended"
	}
	out := slog.NewRecord(r.Time, r.Level, msg, r.PC)
	drop := false
	r.Attrs(func(a slog.Attr) bool {
		switch v := a.Value.Any().(type) {
		case packets.Packet:
			a = slog.Group(a.Key, "type", packets.PacketNames[v.FixedHeader.Type], "topic", clip(v.TopicName), "bytes", len(v.Payload))
		case error:
			drop = drop || errors.Is(v, packets.ErrNotAuthorized) || errors.Is(v, packets.ErrBadUsernameOrPassword)
		}
		out.AddAttrs(a)
		return true
	})
	if drop {
		return nil
	}
	return b.Handler.Handle(ctx, out)
}

func (b boundedLog) WithAttrs(as []slog.Attr) slog.Handler {
	return boundedLog{b.Handler.WithAttrs(as)}
}
func (b boundedLog) WithGroup(g string) slog.Handler { return boundedLog{b.Handler.WithGroup(g)} }

// ExternalOptions configure gatesync's connection to an external broker.
type ExternalOptions struct {
	// URL is tcp://HOST:PORT, or ssl://, tls://, mqtts:// for TLS.
	URL string
	// ClientID is gatesync's client id (default "gatesync"): its session
	// on the broker keeps gate messages while gatesync is down.
	ClientID           string
	Username, Password string
	TLS                *tls.Config
	Logger             *slog.Logger
	// CleanSession drops the broker session with the connection. Instances
	// sharing ingest set it: a broker keeps handing a persistent session
	// its share of the entries while the instance is down (mosquitto does),
	// where a clean one leaves them to the live instances, and gates send
	// again what was in flight.
	CleanSession bool
}

// External is a Bus on an external broker (mosquitto, EMQX, ...).
type External struct {
	client paho.Client
	log    *slog.Logger

	mu      sync.Mutex
	filters []string
	fn      func(string, []byte)
}

// DialExternal starts connecting; it keeps retrying while the broker is
// away, so gatesync starts without it.
func DialExternal(o ExternalOptions) *External {
	if o.ClientID == "" {
		o.ClientID = "gatesync"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	e := &External{log: o.Logger}
	co := paho.NewClientOptions().AddBroker(o.URL).SetClientID(o.ClientID).
		SetCleanSession(o.CleanSession).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(5 * time.Second).
		SetKeepAlive(15 * time.Second).SetWriteTimeout(10 * time.Second).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			e.mu.Lock()
			fn := e.fn
			e.mu.Unlock()
			if fn != nil {
				fn(m.Topic(), m.Payload())
			}
		}).
		SetOnConnectHandler(func(c paho.Client) {
			o.Logger.Info("connected to broker", "broker", o.URL)
			e.subscribe(c)
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) { o.Logger.Warn("broker connection lost", "err", err) })
	if o.Username != "" {
		co.SetUsername(o.Username).SetPassword(o.Password)
	}
	if o.TLS != nil {
		co.SetTLSConfig(o.TLS)
	}
	e.client = paho.NewClient(co)
	e.client.Connect()
	return e
}

func (e *External) subscribe(c paho.Client) {
	e.mu.Lock()
	subs := map[string]byte{}
	for _, f := range e.filters {
		subs[f] = 1
	}
	e.mu.Unlock()
	if len(subs) == 0 {
		return
	}
	// Not waited for here: this runs on paho's goroutine.
	go func() {
		t := c.SubscribeMultiple(subs, nil)
		if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			e.log.Error("subscribe failed", "err", t.Error())
		}
	}()
}

// Subscribe registers fn for filters, now and after every reconnect.
func (e *External) Subscribe(filters []string, fn func(string, []byte)) error {
	e.mu.Lock()
	e.filters = append(e.filters, filters...)
	e.fn = fn
	e.mu.Unlock()
	// IsConnected is also true while paho is still retrying the first
	// connect; then the OnConnect handler subscribes.
	if e.client.IsConnectionOpen() {
		e.subscribe(e.client)
	}
	return nil
}

// Publish publishes at QoS 1 without waiting for the broker: waiting on
// paho's goroutine would deadlock, and nothing here needs the PUBACK (gates
// retry on their own when an ack or delta is lost).
func (e *External) Publish(topic string, payload []byte, retain bool) error {
	t := e.client.Publish(topic, 1, retain, payload)
	if t.WaitTimeout(0); t.Error() != nil {
		return t.Error()
	}
	return nil
}

// Close disconnects.
func (e *External) Close() { e.client.Disconnect(500) }
