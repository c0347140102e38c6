package centre

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gated-dev/gated/sync/wire"
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
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: o.Logger})
	if err := srv.AddHook(&aclHook{auth: o.Auth, certAuth: o.CertAuth, anon: o.AllowAnonymous, ids: map[string]gateID{}}, nil); err != nil {
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
	return &Embedded{srv: srv, addr: l.Address()}, nil
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

	mu  sync.Mutex
	ids map[string]gateID // client id -> the gate it authenticated as
}

type gateID struct{ venue, gate string }

func (h *aclHook) ID() string { return "gated-acl" }

func (h *aclHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *aclHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	id, ok := h.authenticate(cl, pk)
	h.mu.Lock()
	defer h.mu.Unlock()
	if ok && id.gate != "" {
		h.ids[cl.ID] = id
	} else {
		delete(h.ids, cl.ID)
	}
	return ok
}

func (h *aclHook) authenticate(cl *mqtt.Client, pk packets.Packet) (gateID, bool) {
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok && h.certAuth != nil {
		// The listener verified the chain (RequireAndVerifyClientCert).
		if cs := tc.ConnectionState(); len(cs.VerifiedChains) > 0 && len(cs.PeerCertificates) > 0 {
			gate := cs.PeerCertificates[0].Subject.CommonName
			if venue, ok := h.certAuth(gate); ok {
				return gateID{venue, gate}, true
			}
		}
	}
	user := string(pk.Connect.Username)
	if user == "" {
		return gateID{}, h.anon
	}
	if h.auth == nil {
		return gateID{}, false
	}
	venue, ok := h.auth(user, string(pk.Connect.Password))
	return gateID{venue, user}, ok
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

// GateMayRead: see GateMayWrite.
func GateMayRead(venue, gate, topic string) bool {
	return topic == wire.GateTopic(venue, gate, wire.KindAck) || topic == wire.GateTopic(venue, gate, wire.KindSync) ||
		topic == wire.VenueTopic(venue, wire.KindWhitelist) || topic == wire.VenueTopic(venue, wire.KindLive)
}

func (h *aclHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	h.mu.Lock()
	id, ok := h.ids[cl.ID]
	h.mu.Unlock()
	if !ok {
		return h.anon // anonymous clients, when allowed, are unrestricted
	}
	if write {
		return GateMayWrite(id.venue, id.gate, topic)
	}
	return GateMayRead(id.venue, id.gate, topic)
}

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
