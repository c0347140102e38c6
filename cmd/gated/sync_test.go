package main

// End-to-end sync tests: real gated and gatesync processes, a real
// mosquitto broker or gatesync's embedded one.

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/internal/mqtttest"
	"github.com/gated-dev/gated/internal/testreq"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
)

// The broker is down while two gates admit 10,000 scans; when it comes
// back, the centre ends with every entry exactly once.
func TestSyncBrokerDownThenUp(t *testing.T) {
	const n = 10000
	v := newVenue(t, n, "g1", "g2")
	users := map[string]string{"gatesync": "centre-secret", "g1": v.pass["g1"], "g2": v.pass["g2"]}
	acl, err := os.ReadFile("../../deploy/mosquitto/acl") // the example configuration, tested for real
	if err != nil {
		t.Fatal(err)
	}
	m := mqtttest.New(t, mqtttest.Options{Users: users, ACL: strings.ReplaceAll(string(acl), "venue1", testVenue)})
	// Everything starts with the broker absent.
	v.startServe(m.URL, "--broker-username", "gatesync", "--broker-password", "centre-secret")
	g1 := v.startGate("g1", m.URL, "--username", "g1", "--password", v.pass["g1"])
	g2 := v.startGate("g2", m.URL, "--username", "g2", "--password", v.pass["g2"])
	g1.scan(v.codes[:n/2]...)
	g2.scan(v.codes[n/2:]...)
	want := map[string]bool{}
	for _, g := range []*proc{g1, g2} {
		for _, r := range g.waitDecisions(n/2, 3*time.Minute) {
			if r.Verdict != "admit" {
				t.Fatalf("%s: %+v", g.name, r)
			}
			want[r.ID] = true
		}
	}
	if got := v.entries(); len(got) != 0 {
		t.Fatalf("centre has %d entries while the broker is down", len(got))
	}
	m.Start(t)
	waitFor(t, 2*time.Minute, "the centre holds 10,000 entries", func() bool { return len(v.entries()) >= n })
	time.Sleep(500 * time.Millisecond) // any duplicate still in flight lands now
	checkExactlyOnce(t, v.entries(), want)
	var gates []struct {
		Gate     string `json:"gate"`
		StoredTo uint64 `json:"stored_to"`
		Online   bool   `json:"online"`
	}
	waitFor(t, 20*time.Second, "both gates report online with everything stored", func() bool {
		if err := v.get("/api/v1/gates", &gates); err != nil || len(gates) != 2 {
			return false
		}
		return gates[0].Online && gates[1].Online && gates[0].StoredTo == n/2 && gates[1].StoredTo == n/2
	})
	if cs := v.conflicts(); len(cs) != 0 {
		t.Errorf("conflicts: %+v", cs)
	}
	// The ACL: g1's credentials cannot pass entries off as g2's; the
	// centre's can (so it is the ACL that stopped g1).
	forged := forgedBatch("g2")
	publish(t, m.Port, "g1", v.pass["g1"], wire.GateTopic(testVenue, "g2", wire.KindEntries), forged)
	time.Sleep(time.Second)
	if got := len(v.entries()); got != n {
		t.Fatalf("g1 injected an entry as g2: %d entries", got)
	}
	publish(t, m.Port, "gatesync", "centre-secret", wire.GateTopic(testVenue, "g2", wire.KindEntries), forged)
	waitFor(t, 10*time.Second, "the control entry arrives", func() bool { return len(v.entries()) == n+1 })
	// Acked entries leave the outbox; the journal keeps them.
	g1.stop()
	g2.stop()
	for _, g := range []string{"g1", "g2"} {
		var st struct {
			Outbox  *int `json:"outbox"`
			Journal int  `json:"journal"`
		}
		if err := json.Unmarshal([]byte(must(t, runBin(t, nil, "gated", "status", "--data", v.data(g)))), &st); err != nil {
			t.Fatal(err)
		}
		if st.Outbox == nil || *st.Outbox != 0 || st.Journal != n/2 {
			t.Errorf("%s status: outbox %v, journal %d", g, st.Outbox, st.Journal)
		}
	}
}

// SIGKILL of gated and gatesync at random moments during sync, then a
// restart: nothing lost, nothing doubled.
func TestSyncSurvivesSIGKILL(t *testing.T) {
	t.Run("embedded", func(t *testing.T) { testSIGKILL(t, false) })
	t.Run("mosquitto", func(t *testing.T) { testSIGKILL(t, true) })
}

func testSIGKILL(t *testing.T, external bool) {
	const n = 1500
	v := newVenue(t, n, "g1")
	broker := ""
	if external {
		m := mqtttest.New(t, mqtttest.Options{})
		m.Start(t)
		broker = m.URL
	}
	// Decide offline first, so there is a backlog to sync.
	recs := records(t, must(t, runBin(t, strings.NewReader(strings.Join(v.codes, "\n")+"\n"), "gated", "run",
		"--data", v.data("g1"), "--gate", "g1", "--output", "json")))
	if len(recs) != n {
		t.Fatalf("%d decisions", len(recs))
	}
	want := journalIDs(t, v.data("g1"))
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(uint64(seed), 1))
	var serve, gate *proc
	more := 0
	for round := range 8 {
		if serve == nil || !serve.running() {
			serve = v.startServe(broker)
		}
		if gate == nil || !gate.running() {
			gate = v.startGate("g1", broker)
		}
		if round%2 == 1 { // new scans while syncing: they must not be lost either
			gate.scan(v.codes[rnd.IntN(n)])
			more++
		}
		time.Sleep(time.Duration(rnd.IntN(200)) * time.Millisecond) // sync of the backlog takes about this long
		switch rnd.IntN(3) {
		case 0:
			gate.kill()
		case 1:
			serve.kill()
		default:
			gate.kill()
			serve.kill()
		}
	}
	if !serve.running() {
		serve = v.startServe(broker)
	}
	if !gate.running() {
		gate = v.startGate("g1", broker)
	}
	waitFor(t, time.Minute, "the centre holds the journal", func() bool {
		return len(v.entries()) >= n && len(v.entries()) >= len(want)
	})
	gate.stop()
	serve.stop()
	want = journalIDs(t, v.data("g1")) // includes the scans made between kills
	if len(want) < n {
		t.Fatalf("journal has %d entries", len(want))
	}
	v.startServe(broker)
	v.startGate("g1", broker)
	waitFor(t, time.Minute, "the centre holds every journal entry", func() bool { return len(v.entries()) >= len(want) })
	time.Sleep(500 * time.Millisecond)
	checkExactlyOnce(t, v.entries(), want)
}

// Two offline gates admit the same ticket: both admit and the centre flags
// one conflict. Online, the second gate denies within a second, and a
// revocation at the centre is enforced within two.
func TestSyncConflictLiveAndRevocation(t *testing.T) {
	v := newVenue(t, 5, "g1", "g2")
	for _, g := range []string{"g1", "g2"} {
		r := records(t, must(t, runBin(t, strings.NewReader(v.codes[0]+"\n"), "gated", "run", "--data", v.data(g), "--gate", g, "--output", "json")))
		if len(r) != 1 || r[0].Verdict != "admit" {
			t.Fatalf("offline %s: %+v", g, r)
		}
	}
	v.startServe("")
	g1, g2 := v.startGate("g1", ""), v.startGate("g2", "")
	waitFor(t, 20*time.Second, "the centre flags the conflict", func() bool { return len(v.conflicts()) > 0 })
	waitFor(t, 10*time.Second, "both offline entries arrive", func() bool { return len(v.entries()) == 2 })
	cs := v.conflicts()
	if len(cs) != 1 || cs[0].Kind != "two_gates" || cs[0].First.Gate == cs[0].Second.Gate {
		t.Fatalf("conflicts: %+v", cs)
	}
	if _, err := exec.LookPath("mosquitto_pub"); err == nil {
		// The embedded broker's ACL: g1 may publish entries on its own topic
		// only (the first is stored, the second dropped).
		publish(t, v.mqtt, "g1", v.pass["g1"], wire.GateTopic(testVenue, "g1", wire.KindEntries), forgedBatch("g1"))
		waitFor(t, 10*time.Second, "g1's own-topic entry arrives", func() bool { return len(v.entries()) == 3 })
		// mochi disconnects a client that publishes where it may not.
		tryPublish(v.mqtt, "g1", v.pass["g1"], wire.GateTopic(testVenue, "g2", wire.KindEntries), forgedBatch("g2"))
		tryPublish(v.mqtt, "g1", v.pass["g1"], wire.VenueTopic(testVenue, wire.KindWhitelist), []byte("{}"))
		time.Sleep(time.Second)
		if got := len(v.entries()); got != 3 {
			t.Fatalf("g1 published as g2 through the embedded broker: %d entries", got)
		}
		if strings.Contains(g2.err.String(), "ignored downlink message") {
			t.Fatalf("g1's whitelist message reached g2: %s", g2.err)
		}
	} else {
		testreq.Partf(t, "mosquitto_pub is not installed (apt-get install mosquitto-clients): the embedded broker's ACL not tried")
	}
	waitFor(t, 10*time.Second, "both gates connected", func() bool {
		return strings.Contains(g1.err.String(), "connected to broker") && strings.Contains(g2.err.String(), "connected to broker")
	})

	// Live fan-out.
	g1.scan(v.codes[1])
	if r := g1.waitDecisions(1, 5*time.Second); r[0].Verdict != "admit" {
		t.Fatalf("g1: %+v", r[0])
	}
	time.Sleep(time.Second)
	g2.scan(v.codes[1])
	r := g2.waitDecisions(1, 5*time.Second)[0]
	if r.Verdict != "deny" || r.Reason != "already_used" || r.FirstUsedGate != "g1" {
		t.Fatalf("g2 one second after g1's admission: %+v", r)
	}

	// Revocation through the running server.
	id := ticketOfCode(t, v, v.codes[2])
	out := must(t, runBin(t, nil, "gatesync", "revoke", "--server", v.api(), "--dir", v.centre, "--ticket", id, "--reason", "refund"))
	if !strings.Contains(out, "revoked "+id) {
		t.Fatalf("revoke: %s", out)
	}
	time.Sleep(2 * time.Second)
	g1.scan(v.codes[2])
	if r := g1.waitDecisions(2, 5*time.Second)[1]; r.Verdict != "deny" || r.Reason != "revoked" {
		t.Fatalf("g1 two seconds after the revocation: %+v", r)
	}

	// Issuing through the server reaches online gates as a delta.
	newCodes := nonEmptyLines(must(t, runBin(t, nil, "gatesync", "issue", "--server", v.api(), "--dir", v.centre, "--event", "E", "--count", "2")))
	if len(newCodes) != 2 {
		t.Fatalf("issue --server: %v", newCodes)
	}
	waitFor(t, 5*time.Second, "g2 applies the issue delta", func() bool {
		return strings.Count(g2.err.String(), "whitelist delta applied") >= 2
	})
	if cs := v.conflicts(); len(cs) != 1 {
		t.Fatalf("conflicts after the online scans: %+v", cs)
	}

	// The will marks a killed gate offline; a clean stop does too.
	online := func(gate string) bool {
		var gs []struct {
			Gate   string `json:"gate"`
			Online bool   `json:"online"`
		}
		if err := v.get("/api/v1/gates", &gs); err != nil {
			t.Fatal(err)
		}
		for _, g := range gs {
			if g.Gate == gate {
				return g.Online
			}
		}
		return false
	}
	if !online("g1") || !online("g2") {
		t.Fatal("gates not shown online")
	}
	g2.kill()
	waitFor(t, 10*time.Second, "the centre shows the killed g2 offline", func() bool { return !online("g2") })
	g1.stop()
	waitFor(t, 10*time.Second, "the centre shows the stopped g1 offline", func() bool { return !online("g1") })
}

func ticketOfCode(t testing.TB, v *venue, code string) string {
	t.Helper()
	d := t.TempDir()
	must(t, runBin(t, nil, "gated", "provision", "--data", d, v.bundle))
	r := records(t, must(t, runBin(t, strings.NewReader(code+"\n"), "gated", "run", "--data", d, "--gate", "probe", "--output", "json")))
	return r[0].Ticket
}

// A rogue client publishing forged whitelists, deltas, revocations, acks
// and live admissions is ignored and logged; malformed payloads crash
// neither side.
func TestSyncRogueClient(t *testing.T) {
	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		testreq.Skipf(t, "mosquitto_pub is not installed (apt-get install mosquitto-clients)")
	}
	v := newVenue(t, 3, "g1")
	m := mqtttest.New(t, mqtttest.Options{}) // anonymous and no ACL: the worst broker
	m.Start(t)
	serve := v.startServe(m.URL)
	g1 := v.startGate("g1", m.URL)
	waitFor(t, 10*time.Second, "g1 connected", func() bool { return strings.Contains(g1.err.String(), "connected to broker") })
	time.Sleep(300 * time.Millisecond) // subscriptions settle

	id := ticketOfCode(t, v, v.codes[0])
	forged := forgedMessages(t, testVenue, "g1", "E", id)
	dir := t.TempDir()
	for i, f := range forged {
		p := filepath.Join(dir, fmt.Sprint(i))
		os.WriteFile(p, f.payload, 0o600)
		if out, err := exec.Command("mosquitto_pub", "-p", fmt.Sprint(m.Port), "-q", "1", "-t", f.topic, "-f", p).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_pub %s: %v %s", f.topic, err, out)
		}
	}
	downlink := 0
	for _, f := range forged {
		if !f.uplink {
			downlink++
		}
	}
	waitFor(t, 10*time.Second, "g1 logs every forged or malformed message", func() bool {
		return strings.Count(g1.err.String(), "ignored downlink message") >= downlink
	})
	waitFor(t, 10*time.Second, "gatesync logs malformed uplink messages", func() bool {
		return strings.Count(serve.err.String(), "refused uplink message") >= 4
	})
	if !serve.running() || !g1.running() {
		t.Fatalf("a daemon died: serve %v gate %v", serve.err, g1.err)
	}
	// The forged revocation, delta, snapshot and live use changed nothing.
	g1.scan(v.codes[0])
	if r := g1.waitDecisions(1, 5*time.Second)[0]; r.Verdict != "admit" || r.Reason != "ok" {
		t.Fatalf("after the forgeries: %+v", r)
	}
	waitFor(t, 10*time.Second, "the real entry reaches the centre", func() bool { return len(v.entries()) == 1 })
	if got := v.entries(); got[0].Gate != "g1" || got[0].Entry.Ticket != id {
		t.Fatalf("centre books: %+v", got)
	}
}

type rogueMsg struct {
	topic   string
	payload []byte
	uplink  bool
}

func jsonOf(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// forgedMessages are what a rogue client with broker access sends: every
// downlink kind signed by a key that is not the centre's, and garbage.
func forgedMessages(t testing.TB, venueID, gate, event, ticket string) []rogueMsg {
	_, rogue, _ := ed25519.GenerateKey(nil) // nil: crypto/rand
	tid, err := verify.ParseTicketID(ticket)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(typ string, v any) []byte {
		b, err := wire.Sign(typ, v, rogue)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	wl, live := wire.VenueTopic(venueID, wire.KindWhitelist), wire.VenueTopic(venueID, wire.KindLive)
	syncT, ackT := wire.GateTopic(venueID, gate, wire.KindSync), wire.GateTopic(venueID, gate, wire.KindAck)
	badSig := sign(wire.TypeDelta, &wire.Delta{Event: event, Prev: 0, Version: 998})
	badSig[len(badSig)-5] ^= 1
	return []rogueMsg{
		{topic: wl, payload: sign(wire.TypeDelta, &wire.Delta{Event: event, Prev: 0, Version: 999,
			Revocations: []verify.Revocation{{ID: tid, At: time.Now().UTC(), Reason: "forged"}}})},
		{topic: wl, payload: badSig},
		{topic: wl, payload: []byte("{not json")},
		{topic: live, payload: sign(wire.TypeLive, &wire.Live{Venue: venueID, Event: event,
			Uses: []wire.LiveUse{{Ticket: tid, Gate: "g9", At: time.Now().UTC(), Seq: 1, EntryID: "x-1"}}})},
		{topic: syncT, payload: sign(wire.TypeManifest, &wire.Manifest{Venue: venueID, Gate: gate, ID: 1, Event: event, Version: 999,
			TrustList: &verify.Envelope{Type: verify.TypeTrustList}, Chunks: []string{}})},
		{topic: syncT, payload: sign(wire.TypeDelta, &wire.Delta{Event: event, Prev: 0, Version: 1000, Revocations: []verify.Revocation{{ID: tid}}})},
		{topic: ackT, payload: sign(wire.TypeAck, &wire.Ack{Venue: venueID, Gate: gate, First: 1, Last: 1 << 40})},
		{topic: ackT, payload: []byte{0xff, 0x00, 0x7b}},
		{topic: wire.GateTopic(venueID, gate, wire.KindEntries), payload: []byte("{"), uplink: true},
		{topic: wire.GateTopic(venueID, gate, wire.KindEntries), payload: jsonOf(wire.Batch{V: 1, Gate: "g2", Instance: "x"}), uplink: true},
		{topic: wire.GateTopic(venueID, gate, wire.KindStatus), payload: []byte{0, 1, 2, 3}, uplink: true},
		{topic: wire.GateTopic(venueID, gate, wire.KindHello), payload: []byte("{}"), uplink: true},
	}
}

// forgedBatch is a well-formed one-entry batch in gate's name.
func forgedBatch(gate string) []byte {
	e := jsonOf(map[string]any{"seq": 1, "id": "forged-1", "gate": gate, "verdict": "deny", "reason": "malformed", "at": time.Now().UTC()})
	return jsonOf(wire.Batch{V: wire.Version, Gate: gate, Instance: "forged", First: 1, Last: 1, SentAt: time.Now().UTC(),
		Entries: []json.RawMessage{e}})
}

func publish(t testing.TB, port int, user, pass, topic string, payload []byte) {
	t.Helper()
	// The gate's own daemon, logged in with the same client id, may take
	// its session back before mosquitto_pub has published: try again.
	var out []byte
	var err error
	for range 20 {
		if out, err = tryPublish(port, user, pass, topic, payload); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("mosquitto_pub as %s on %s: %v %s", user, topic, err, out)
}

// tryPublish publishes as user; a gate's login may only use its own client
// id (centre.GateClientID), so a gate user publishes as that.
func tryPublish(port int, user, pass, topic string, payload []byte) ([]byte, error) {
	id := "test-" + user
	if user != "gatesync" {
		id = centre.GateClientID(testVenue, user)
	}
	return exec.Command("mosquitto_pub", "-p", fmt.Sprint(port), "-u", user, "-P", pass, "-i", id,
		"-q", "1", "-t", topic, "-m", string(payload)).CombinedOutput()
}

// A change too big for a delta reaches an online gate as a snapshot; a new
// issuer key made while gatesync was down reaches it as a trust-list delta
// when gatesync comes back, and the gate verifies with it at once.
func TestSyncSnapshotAndTrustRotation(t *testing.T) {
	v := newVenue(t, 1, "g1")
	v.startServe("")
	g1 := v.startGate("g1", "", "--strict")
	waitFor(t, 10*time.Second, "g1 connected", func() bool { return strings.Contains(g1.err.String(), "connected to broker") })
	codes := nonEmptyLines(must(t, runBin(t, nil, "gatesync", "issue", "--server", v.api(), "--dir", v.centre, "--event", "E", "--count", "6000")))
	waitFor(t, 30*time.Second, "g1 applies a snapshot", func() bool { return strings.Contains(g1.err.String(), "snapshot applied") })
	g1.scan(codes[5999])
	if r := g1.waitDecisions(1, 5*time.Second)[0]; r.Verdict != "admit" {
		t.Fatalf("strict gate, ticket from the snapshot: %+v", r)
	}

	v.serve.stop()
	must(t, runBin(t, nil, "gatesync", "rotate-key", "--dir", v.centre))
	fresh := nonEmptyLines(must(t, runBin(t, nil, "gatesync", "issue", "--dir", v.centre, "--event", "E", "--count", "1")))
	v.startServe("")
	waitFor(t, 20*time.Second, "g1 takes the new trust list", func() bool { return strings.Contains(g1.err.String(), "trust list rotated") })
	waitFor(t, 10*time.Second, "g1 takes the new ticket", func() bool { return strings.Count(g1.err.String(), "whitelist delta applied") >= 2 })
	g1.scan(fresh[0])
	if r := g1.waitDecisions(2, 5*time.Second)[1]; r.Verdict != "admit" {
		t.Fatalf("ticket signed by the new issuer key: %+v", r)
	}
}
