package centre

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gated-dev/gated/internal/mqtttest"
	"github.com/gated-dev/gated/internal/testreq"
	"github.com/gated-dev/gated/wire"
)

const deployDir = "../deploy/mosquitto"

// shippedMosquitto runs the real mosquitto with deploy/mosquitto's
// configuration (only the port, the plugin file and persistence changed),
// set up with setup.sh and its gates added with add-gate.sh, as an operator
// would.
type shippedMosquitto struct {
	url    string
	log    *lockedBuffer
	env    []string
	pass   map[string]string
	venue  string
	cmd    *exec.Cmd
	conf   string
	broker string
}

func startShippedMosquitto(t *testing.T, gates ...string) *shippedMosquitto {
	t.Helper()
	path, ok := mqtttest.Installed()
	if !ok {
		testreq.Skipf(t, "mosquitto is not installed (apt-get install mosquitto)")
	}
	plugin := "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
	if _, err := os.Stat(plugin); err != nil {
		testreq.Skipf(t, "mosquitto's dynamic security plugin is not installed")
	}
	dir := t.TempDir()
	dynsec := filepath.Join(dir, "dynamic-security.json")
	out, err := exec.Command(filepath.Join(deployDir, "setup.sh"), dynsec).CombinedOutput()
	if err != nil {
		t.Fatalf("setup.sh: %v: %s", err, out)
	}
	m := &shippedMosquitto{log: &lockedBuffer{}, pass: map[string]string{}, venue: "arena", broker: path}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		m.pass[f[0]] = f[1]
	}
	port := mqtttest.FreePort(t)
	m.url = fmt.Sprintf("tcp://127.0.0.1:%d", port)
	shipped, err := os.ReadFile(filepath.Join(deployDir, "mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	var conf []string
	for _, l := range strings.Split(string(shipped), "\n") {
		switch {
		case strings.HasPrefix(l, "listener "):
			l = fmt.Sprintf("listener %d 127.0.0.1", port)
		case strings.HasPrefix(l, "plugin_opt_config_file "):
			l = "plugin_opt_config_file " + dynsec
		case strings.HasPrefix(l, "persistence"), strings.HasPrefix(l, "autosave"), strings.HasPrefix(l, "log_dest"):
			l = "#" + l
		}
		conf = append(conf, l)
	}
	conf = append(conf, "log_dest stderr", "user root")
	m.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(strings.Join(conf, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	m.start(t)
	t.Cleanup(m.stop)
	m.env = append(os.Environ(), fmt.Sprintf("MOSQ_CTRL_OPTS=-h 127.0.0.1 -p %d -u admin", port), "MOSQ_ADMIN_PASSWORD="+m.pass["admin"])
	for _, g := range gates {
		out := m.script(t, "add-gate.sh", m.venue, g)
		f := strings.Fields(out)
		if len(f) != 2 || f[0] != g {
			t.Fatalf("add-gate.sh printed %q", out)
		}
		m.pass[g] = f[1]
	}
	return m
}

func (m *shippedMosquitto) start(t *testing.T) {
	m.cmd = exec.Command(m.broker, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(m.url, "tcp://")
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", host); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not start: %s", m.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *shippedMosquitto) stop() {
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill()
		m.cmd.Wait()
	}
}

// script runs one of deploy/mosquitto's scripts against the broker.
func (m *shippedMosquitto) script(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(deployDir, name), args...)
	cmd.Env = m.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// client connects as gatelink does (clean session off).
func (m *shippedMosquitto) client(t *testing.T, user, clientID string) (paho.Client, chan struct{}, error) {
	t.Helper()
	lost := make(chan struct{})
	var once sync.Once
	o := paho.NewClientOptions().AddBroker(m.url).SetClientID(clientID).SetUsername(user).SetPassword(m.pass[user]).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) { once.Do(func() { close(lost) }) })
	cl := paho.NewClient(o)
	tok := cl.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil, nil, fmt.Errorf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { cl.Disconnect(0) })
	return cl, lost, nil
}

// centre is gatesync's own connection (External) as gatesync serve makes
// it, subscribed to every gate's uplink; got receives its messages' topics.
func (m *shippedMosquitto) centre(t *testing.T) (*External, chan string) {
	t.Helper()
	got := make(chan string, 100)
	x := DialExternal(ExternalOptions{URL: m.url, Username: "gatesync", Password: m.pass["gatesync"]})
	t.Cleanup(x.Close)
	x.Subscribe([]string{wire.Prefix + "#"}, func(topic string, p []byte) { got <- fmt.Sprintf("%s %d", topic, len(p)) })
	for deadline := time.Now().Add(10 * time.Second); !x.client.IsConnectionOpen(); {
		if time.Now().After(deadline) {
			t.Fatalf("gatesync did not connect: %s", m.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the subscription is made on its own goroutine
	return x, got
}

// served checks that gate's client gets what gatesync publishes to it.
func (m *shippedMosquitto) served(t *testing.T, x *External, cl paho.Client, gate string) {
	t.Helper()
	got := make(chan struct{}, 1)
	topic := wire.GateTopic(m.venue, gate, wire.KindAck)
	if tok := cl.Subscribe(topic, 1, func(paho.Client, paho.Message) {
		select {
		case got <- struct{}{}:
		default:
		}
	}); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("%s cannot subscribe to its ack topic: %v", gate, tok.Error())
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		x.Publish(topic, []byte("x"), false)
		select {
		case <-got:
			return
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not get its messages", gate)
		}
	}
}

func TestMosquittoClientIDBoundToLogin(t *testing.T) {
	m := startShippedMosquitto(t, "g1", "g2")
	x, _ := m.centre(t)
	g2, g2lost, err := m.client(t, "g2", GateClientID("arena", "g2"))
	if err != nil {
		t.Fatalf("g2 with its own client id: %v", err)
	}
	for _, tc := range []struct{ name, user, clientID string }{
		{"another gate's client id", "g1", GateClientID("arena", "g2")},
		{"gatesync's client id", "g1", "gatesync"},
		{"its own id at another venue", "g1", GateClientID("other", "g1")},
	} {
		if _, _, err := m.client(t, tc.user, tc.clientID); err == nil {
			t.Errorf("%s: %s logged in as client %q", tc.name, tc.user, tc.clientID)
		}
	}
	select {
	case <-g2lost:
		t.Fatal("g2 was thrown off by a login with its client id")
	default:
	}
	if !x.client.IsConnectionOpen() {
		t.Fatal("gatesync was thrown off")
	}
	m.served(t, x, g2, "g2")
	if _, _, err := m.client(t, "g1", GateClientID("arena", "g1")); err != nil {
		t.Errorf("g1 with its own client id: %v", err)
	}
}

func TestMosquittoRefusedAndOversizePublish(t *testing.T) {
	m := startShippedMosquitto(t, "g1", "g2")
	_, got := m.centre(t)
	g1, _, err := m.client(t, "g1", GateClientID("arena", "g1"))
	if err != nil {
		t.Fatal(err)
	}
	before := len(m.log.String())
	g1.Publish(wire.GateTopic("arena", "g2", wire.KindEntries), 1, false, bytes.Repeat([]byte{0xfe}, 1<<20)).WaitTimeout(5 * time.Second)
	g1.Publish(wire.GateTopic("arena", "g1", wire.KindStatus), 1, false, []byte("own")).WaitTimeout(5 * time.Second)
	select {
	case s := <-got:
		if s != wire.GateTopic("arena", "g1", wire.KindStatus)+" 3" {
			t.Fatalf("gatesync got %q: the refused publish went through", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("g1's own status did not reach gatesync")
	}
	log := m.log.String()[before:]
	t.Logf("one refused 1 MiB publish: %d bytes of broker log", len(log))
	if len(log) > 1024 {
		t.Errorf("a refused 1 MiB publish wrote %d bytes of broker log", len(log))
	}
	// Over max_packet_size: disconnected, never forwarded.
	g1b, lost, err := m.client(t, "g1", GateClientID("arena", "g1"))
	if err != nil {
		t.Fatal(err)
	}
	g1b.Publish(wire.GateTopic("arena", "g1", wire.KindEntries), 1, false, make([]byte, wire.MaxMessage+2048)).WaitTimeout(5 * time.Second)
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("an oversize publish did not end the connection")
	}
	select {
	case s := <-got:
		t.Fatalf("gatesync got %q", s)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestMosquittoLockAndRemoveGate(t *testing.T) {
	m := startShippedMosquitto(t, "g1", "g2")
	x, _ := m.centre(t)
	_, lost, err := m.client(t, "g1", GateClientID("arena", "g1"))
	if err != nil {
		t.Fatal(err)
	}
	g2, _, err := m.client(t, "g2", GateClientID("arena", "g2"))
	if err != nil {
		t.Fatal(err)
	}
	m.script(t, "lock-gate.sh", "g1")
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("a locked gate stayed connected")
	}
	if _, _, err := m.client(t, "g1", GateClientID("arena", "g1")); err == nil {
		t.Fatal("a locked gate logged in")
	}
	m.served(t, x, g2, "g2")
	m.script(t, "unlock-gate.sh", "g1")
	if _, _, err := m.client(t, "g1", GateClientID("arena", "g1")); err != nil {
		t.Fatalf("unlocked gate: %v", err)
	}
	m.script(t, "remove-gate.sh", "g1")
	if _, _, err := m.client(t, "g1", GateClientID("arena", "g1")); err == nil {
		t.Fatal("a removed gate logged in")
	}
	// add-gate.sh refuses what would break a topic.
	cmd := exec.Command(filepath.Join(deployDir, "add-gate.sh"), "arena", "g/#")
	cmd.Env = m.env
	if err := cmd.Run(); err == nil {
		t.Error("add-gate.sh took gate id g/#")
	}
}

// TestMosquittoSharedIngest: gatesync instances sharing ingest
// (docs/scaleout.md) take entries through $share/GROUP/... under the
// shipped roles, each with its own client id.
func TestMosquittoSharedIngest(t *testing.T) {
	m := startShippedMosquitto(t, "g1")
	got := make(chan string, 10)
	for _, id := range []string{"gatesync-a", "gatesync-b"} {
		x := DialExternal(ExternalOptions{URL: m.url, ClientID: id, CleanSession: true, Username: "gatesync", Password: m.pass["gatesync"]})
		t.Cleanup(x.Close)
		x.Subscribe([]string{"$share/ingest/" + wire.Prefix + "+/+/" + wire.KindEntries}, func(topic string, _ []byte) { got <- topic })
	}
	time.Sleep(500 * time.Millisecond) // both connect and subscribe
	g1, _, err := m.client(t, "g1", GateClientID("arena", "g1"))
	if err != nil {
		t.Fatal(err)
	}
	g1.Publish(wire.GateTopic("arena", "g1", wire.KindEntries), 1, false, []byte("{}")).WaitTimeout(5 * time.Second)
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatalf("no instance got the shared entries: %s", m.log)
	}
	select {
	case s := <-got:
		t.Fatalf("a shared message reached two instances: %s", s)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestMosquittoWillACL: a gate's will on another gate's topic never
// reaches gatesync; one on its own status does (so the test sees wills).
func TestMosquittoWillACL(t *testing.T) {
	m := startShippedMosquitto(t, "g1", "g2")
	_, got := m.centre(t)
	for _, tc := range []struct {
		topic string
		sent  bool
	}{
		{wire.GateTopic("arena", "g2", wire.KindEntries), false},
		{wire.GateTopic("arena", "g1", wire.KindStatus), true},
	} {
		var conn net.Conn
		o := paho.NewClientOptions().AddBroker(m.url).SetClientID(GateClientID("arena", "g1")).SetUsername("g1").
			SetPassword(m.pass["g1"]).SetAutoReconnect(false).SetConnectTimeout(5*time.Second).SetBinaryWill(tc.topic, []byte(`{"v":1}`), 1, false).
			SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
				c, err := net.Dial("tcp", u.Host)
				conn = c
				return c, err
			})
		cl := paho.NewClient(o)
		if tok := cl.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			conn.Close() // an unclean end: the broker sends the will
		}
		select {
		case s := <-got:
			if !tc.sent || !strings.HasPrefix(s, tc.topic+" ") {
				t.Fatalf("will on %s: gatesync got %s", tc.topic, s)
			}
		case <-time.After(time.Second):
			if tc.sent {
				t.Fatalf("will on %s did not arrive", tc.topic)
			}
		}
	}
}
