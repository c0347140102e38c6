package centre

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gated-dev/gated/wire"
	"github.com/mochi-mqtt/server/v2/packets"
)

// lockedBuffer is a log sink the broker's goroutines write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// embeddedVenue is the real embedded broker with gate logins g1 and g2 at
// venue arena, as gatesync serve starts it.
type embeddedVenue struct {
	c     *Centre
	e     *Embedded
	log   *lockedBuffer
	pass  map[string]string
	venue string
}

func startEmbeddedVenue(t *testing.T) *embeddedVenue {
	t.Helper()
	c, _ := newCentre(t)
	v := &embeddedVenue{c: c, log: &lockedBuffer{}, pass: map[string]string{}, venue: "arena"}
	for _, g := range []string{"g1", "g2"} {
		p, err := c.AddGateUser(v.venue, g)
		if err != nil {
			t.Fatal(err)
		}
		v.pass[g] = p
	}
	e, err := StartEmbedded(EmbeddedOptions{Addr: "127.0.0.1:0", Auth: c.CheckGateUser, CertAuth: c.GateVenue,
		Logger: slog.New(slog.NewTextHandler(v.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	c.OnGateLogin(func(_, gate string) { e.Kick(gate) })
	v.e = e
	return v
}

// client is a paho client as gatelink dials it (clean session off),
// connected, or the connect error. lost is closed when the broker drops it.
func (v *embeddedVenue) client(t *testing.T, user, clientID string) (paho.Client, chan struct{}, error) {
	t.Helper()
	lost := make(chan struct{})
	var once sync.Once
	o := paho.NewClientOptions().AddBroker("tcp://" + v.e.addr).SetClientID(clientID).SetUsername(user).
		SetPassword(v.pass[user]).SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) { once.Do(func() { close(lost) }) })
	cl := paho.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("connect timed out")
	}
	if tok.Error() != nil {
		return nil, nil, tok.Error()
	}
	t.Cleanup(func() { cl.Disconnect(0) })
	return cl, lost, nil
}

// stillServed checks that cl is connected and still gets what the centre
// sends it.
func (v *embeddedVenue) stillServed(t *testing.T, cl paho.Client, gate string) {
	t.Helper()
	got := make(chan struct{}, 1)
	topic := wire.GateTopic(v.venue, gate, wire.KindAck)
	if tok := cl.Subscribe(topic, 1, func(paho.Client, paho.Message) {
		select {
		case got <- struct{}{}:
		default:
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("%s cannot subscribe to its own ack topic: %v", gate, tok.Error())
	}
	if err := v.e.Publish(topic, []byte("x"), false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s no longer gets its messages", gate)
	}
}

func TestEmbeddedClientIDBoundToLogin(t *testing.T) {
	v := startEmbeddedVenue(t)
	g2, g2lost, err := v.client(t, "g2", GateClientID("arena", "g2"))
	if err != nil {
		t.Fatalf("g2 with its own client id: %v", err)
	}
	for _, tc := range []struct{ name, user, clientID string }{
		{"another gate's client id", "g1", GateClientID("arena", "g2")},
		{"gatesync's client id", "g1", "gatesync"},
		{"a shared-ingest instance's client id", "g1", "gatesync-2"},
		{"its own id at another venue", "g1", GateClientID("other", "g1")},
		{"the inline client's id", "g1", "inline"},
	} {
		if _, _, err := v.client(t, tc.user, tc.clientID); err == nil {
			t.Errorf("%s: %s logged in as client %q", tc.name, tc.user, tc.clientID)
		}
	}
	select {
	case <-g2lost:
		t.Fatal("g2 was thrown off by a login with its client id")
	default:
	}
	v.stillServed(t, g2, "g2")
	if _, _, err := v.client(t, "g1", GateClientID("arena", "g1")); err != nil {
		t.Errorf("g1 with its own client id: %v", err)
	}
	if line := lineWith(v.log.String(), "broker login refused"); !strings.Contains(line, "username=g1") ||
		!strings.Contains(line, "client=gated-arena-g2") || !strings.Contains(line, "remote=127.0.0.1:") {
		t.Errorf("refused login not logged with who: %q", line)
	}
}

func lineWith(log, what string) string {
	for l := range strings.Lines(log) {
		if strings.Contains(l, what) {
			return l
		}
	}
	return ""
}

func TestEmbeddedRefusedPublishLogBounded(t *testing.T) {
	v := startEmbeddedVenue(t)
	g1, lost, err := v.client(t, "g1", GateClientID("arena", "g1"))
	if err != nil {
		t.Fatal(err)
	}
	before := len(v.log.String())
	payload := bytes.Repeat([]byte{0xfe}, 1<<20)
	g1.Publish(wire.GateTopic("arena", "g2", wire.KindEntries), 1, false, payload).WaitTimeout(5 * time.Second)
	select {
	case <-lost: // MQTT 3.1.1: a refused QoS 1 publish ends the connection
	case <-time.After(5 * time.Second):
		t.Fatal("refused publish did not disconnect g1")
	}
	time.Sleep(100 * time.Millisecond) // mochi logs after the disconnect
	log := v.log.String()[before:]
	line := lineWith(log, "refused publish")
	for _, want := range []string{"username=g1", "client=gated-arena-g1", "remote=127.0.0.1:", "topic=gated/v1/arena/g2/entries", "bytes=1048576"} {
		if !strings.Contains(line, want) {
			t.Errorf("refused publish line lacks %s: %q", want, line)
		}
	}
	t.Logf("one refused 1 MiB publish: %d bytes of log", len(log))
	if len(log) > 1024 {
		t.Errorf("one refused 1 MiB publish wrote %d bytes of log, want < 1 KB:\n%.2000s", len(log), log)
	}
}

func TestEmbeddedLockAndRemoveGate(t *testing.T) {
	v := startEmbeddedVenue(t)
	_, lost, err := v.client(t, "g1", GateClientID("arena", "g1"))
	if err != nil {
		t.Fatal(err)
	}
	g2, _, err := v.client(t, "g2", GateClientID("arena", "g2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.c.LockGate("arena", "g1", true); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("a locked gate stayed connected")
	}
	if _, _, err := v.client(t, "g1", GateClientID("arena", "g1")); err == nil {
		t.Fatal("a locked gate logged in again")
	}
	v.stillServed(t, g2, "g2")
	if err := v.c.LockGate("arena", "g1", false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.client(t, "g1", GateClientID("arena", "g1")); err != nil {
		t.Fatalf("unlocked gate: %v", err)
	}
	if err := v.c.RemoveGate("arena", "g1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.client(t, "g1", GateClientID("arena", "g1")); err == nil {
		t.Fatal("a removed gate logged in")
	}
	if err := v.c.LockGate("arena", "g1", true); err == nil || !strings.Contains(err.Error(), "add-gate") {
		t.Errorf("locking a removed gate: %v", err)
	}
}

// TestEmbeddedOversizePacket: a gate that sends more than the broker's
// maximum packet size is disconnected, and nothing reaches the centre.
func TestEmbeddedOversizePacket(t *testing.T) {
	v := startEmbeddedVenue(t)
	got := make(chan string, 1)
	if err := v.e.Subscribe([]string{wire.Prefix + "#"}, func(topic string, _ []byte) { got <- topic }); err != nil {
		t.Fatal(err)
	}
	g1, lost, err := v.client(t, "g1", GateClientID("arena", "g1"))
	if err != nil {
		t.Fatal(err)
	}
	g1.Publish(wire.GateTopic("arena", "g1", wire.KindEntries), 1, false, make([]byte, wire.MaxMessage+2048)).WaitTimeout(5 * time.Second)
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("an oversize packet did not end the connection")
	}
	select {
	case s := <-got:
		t.Fatalf("the centre got %s", s)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestEmbeddedWillACL: mochi publishes a will without an ACL check, so a
// gate may only set one on its own topics.
func TestEmbeddedWillACL(t *testing.T) {
	v := startEmbeddedVenue(t)
	got := make(chan string, 4)
	if err := v.e.Subscribe([]string{wire.Prefix + "#"}, func(topic string, _ []byte) { got <- topic }); err != nil {
		t.Fatal(err)
	}
	dial := func(will string) (paho.Client, error) {
		o := paho.NewClientOptions().AddBroker("tcp://"+v.e.addr).SetClientID(GateClientID("arena", "g1")).SetUsername("g1").
			SetPassword(v.pass["g1"]).SetAutoReconnect(false).SetConnectTimeout(5*time.Second).
			SetBinaryWill(will, forgedWill, 1, false)
		cl := paho.NewClient(o)
		tok := cl.Connect()
		tok.WaitTimeout(5 * time.Second)
		return cl, tok.Error()
	}
	for _, topic := range []string{wire.GateTopic("arena", "g2", wire.KindEntries), wire.VenueTopic("arena", wire.KindLive)} {
		if cl, err := dial(topic); err == nil {
			cl.Disconnect(0)
			t.Errorf("g1 connected with a will on %s", topic)
		}
	}
	own := wire.GateTopic("arena", "g1", wire.KindStatus)
	if _, err := dial(own); err != nil {
		t.Fatalf("will on its own status: %v", err)
	}
	v.e.Kick("g1") // an unclean end: the will goes out
	select {
	case s := <-got:
		if s != own {
			t.Fatalf("a will reached %s", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the gate's own will did not arrive")
	}
}

var forgedWill = []byte(`{"v":1}`)

// TestBoundedLog: whatever mochi logs with a packet in it (a failed
// delivery, a protocol error) shows the packet's type, topic and size only.
func TestBoundedLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(boundedLog{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})})
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "gated/v1/arena/g1/entries",
		Payload: bytes.Repeat([]byte{0xfe}, 1<<20)}
	for _, tc := range []struct {
		name string
		log  func()
		want string // "" when the line must be dropped
	}{
		{"a packet", func() { log.Debug("failed publishing packet", "error", errors.New("x"), "packet", pk) },
			"packet.type=Publish packet.topic=gated/v1/arena/g1/entries packet.bytes=1048576"},
		{"refused publish (the hook logged it)", func() { log.Warn("error processing packet", "error", packets.ErrNotAuthorized, "pk", pk) }, ""},
		{"refused login (the hook logged it)", func() { log.Warn("", "error", packets.ErrBadUsernameOrPassword) }, ""},
		{"a connection error gets a message", func() { log.Warn("", "error", packets.ErrProtocolViolation) },
			`msg="client connection ended"`},
		{"other lines as they are", func() { log.Info("mochi mqtt starting", "version", "2") }, "version=2"},
	} {
		buf.Reset()
		tc.log()
		if out := buf.String(); (tc.want == "") != (out == "") || !strings.Contains(out, tc.want) || len(out) > 512 {
			t.Errorf("%s: %.300q (%d bytes), want %q", tc.name, out, len(out), tc.want)
		}
	}
}
