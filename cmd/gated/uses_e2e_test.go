package main

// Single use across the venue, through the real binaries: a gate that was
// away learns every admission made elsewhere from the centre's uses log,
// whatever the broker lost; a gate login cannot burn other gates' tickets.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/internal/mqtttest"
	"github.com/gated-dev/gated/internal/testreq"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
)

// gateEntries is how many entries the centre booked from gate (its state in
// /api/v1/gates; cheaper than reading every entry).
func (v *venue) gateEntries(gate string) int {
	var gs []struct {
		Gate    string `json:"gate"`
		Entries int    `json:"entries"`
	}
	if err := v.get("/api/v1/gates", &gs); err != nil {
		return -1
	}
	for _, g := range gs {
		if g.Gate == gate {
			return g.Entries
		}
	}
	return 0
}

// readmissions counts the admissions among a gate's decisions.
func readmissions(rs []record) (n int, first *record) {
	for i, r := range rs {
		if r.Verdict == "admit" {
			if first == nil {
				first = &rs[i]
			}
			n++
		}
	}
	return n, first
}

// TestUsesAfterCentreRestart: g2 is away while the broker's sessions are
// lost (gatesync serve with the embedded broker restarts; an external
// Mosquitto without persistence restarts), then g1 admits five tickets.
// Nothing queued them for g2: it learns them from the uses log when it
// comes back, before it decides, and refuses every one.
func TestUsesAfterCentreRestart(t *testing.T) {
	for _, broker := range []string{"embedded", "mosquitto"} {
		t.Run(broker, func(t *testing.T) {
			v := newVenue(t, 8, "g1", "g2")
			url := ""
			var m *mqtttest.Mosquitto
			if broker == "mosquitto" {
				m = mqtttest.New(t, mqtttest.Options{})
				m.Start(t)
				url = m.URL
			}
			v.startServe(url)
			g1, g2 := v.startGate("g1", url), v.startGate("g2", url)
			waitFor(t, 10*time.Second, "both gates connected", func() bool {
				return strings.Contains(g1.err.String(), "connected to broker") && strings.Contains(g2.err.String(), "connected to broker")
			})
			g2.stop()
			if m != nil {
				m.Stop()
				m.Start(t)
			} else {
				v.serve.stop()
				v.startServe(url)
			}
			g1.scan(v.codes[:5]...)
			if n, _ := readmissions(g1.waitDecisions(5, 10*time.Second)); n != 5 {
				t.Fatalf("g1 admitted %d of 5", n)
			}
			waitFor(t, 20*time.Second, "the centre books g1's admissions", func() bool { return v.gateEntries("g1") == 5 })
			g2 = v.startGate("g2", url)
			g2.scan(v.codes[:5]...)
			rs := g2.waitDecisions(5, 10*time.Second)
			n, first := readmissions(rs)
			t.Logf("readmissions at g2 after the %s restart: %d of 5", broker, n)
			if n != 0 {
				t.Fatalf("g2 admitted %d tickets g1 had admitted, first %+v\ng2 log:\n%s", n, *first, g2.err)
			}
			for _, r := range rs {
				if r.Reason != "already_used" || r.FirstUsedGate != "g1" {
					t.Errorf("g2: %+v; want already_used at g1", r)
				}
			}
			if !strings.Contains(g2.err.String(), "caught up with the centre") {
				t.Errorf("g2 decided before its catch-up:\n%s", g2.err)
			}
		})
	}
}

// awayCount is how many admissions happen while a gate is away: 20,000,
// above the embedded broker's session queue of 8,192 (about 40 s on a
// loaded 2-core box); GATED_TEST_AWAY overrides, -short uses 2,000.
func awayCount(t *testing.T) int {
	if s := os.Getenv("GATED_TEST_AWAY"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if testing.Short() {
		return 2000
	}
	return 20000
}

// TestUsesGateAwayLong: g2 is away while g1 admits 20,000 tickets on the
// embedded broker, more than its session queue keeps; g2 comes back,
// catches up in pages and refuses every one.
func TestUsesGateAwayLong(t *testing.T) {
	n := awayCount(t)
	start := time.Now()
	v := newVenue(t, n, "g1", "g2")
	v.startServe("")
	g1, g2 := v.startGate("g1", ""), v.startGate("g2", "")
	waitFor(t, 10*time.Second, "both gates connected", func() bool {
		return strings.Contains(g1.err.String(), "connected to broker") && strings.Contains(g2.err.String(), "connected to broker")
	})
	g2.stop()
	g1.scan(v.codes...)
	waitSlowly(t, 60*time.Second, fmt.Sprintf("g1 decides %d scans", n), func() bool {
		return strings.Count(g1.out.String(), "\n") >= n
	})
	if a, _ := readmissions(g1.decisions()); a != n {
		t.Fatalf("g1 admitted %d of %d", a, n)
	}
	waitSlowly(t, 60*time.Second, "the centre books g1's admissions", func() bool { return v.gateEntries("g1") == n })
	g2 = v.startGate("g2", "")
	defer func() {
		if t.Failed() {
			t.Logf("g2 log (tail):\n%s\ngatesync log (tail):\n%s", tail(g2.err.String(), 40), tail(v.serve.err.String(), 40))
		}
	}()
	// It decides on its own after catchup_wait (2 s); a backlog this large
	// takes longer: scan once the uses log is caught up.
	waitSlowly(t, 60*time.Second, "g2 catches up", func() bool {
		return strings.Contains(g2.err.String(), "uses log caught up")
	})
	g2.scan(v.codes...)
	waitSlowly(t, 60*time.Second, fmt.Sprintf("g2 decides %d scans", n), func() bool {
		return strings.Count(g2.out.String(), "\n") >= n
	})
	rs := g2.decisions()
	a, first := readmissions(rs)
	t.Logf("readmissions at g2 after %d admissions elsewhere: %d (test took %s)", n, a, time.Since(start).Round(time.Second))
	if a != 0 {
		t.Fatalf("g2 admitted %d of the %d tickets g1 had admitted, first %+v", a, n, *first)
	}
}

// TestUsesForgedAdmissions: g1's login publishes a made-up batch, from a
// fresh instance, claiming admissions of tickets nobody scanned, with no
// code, a forged code and another ticket's code. The centre books them as
// alerts against g1 and fans none out: g2 admits those tickets.
func TestUsesForgedAdmissions(t *testing.T) {
	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		testreq.Skipf(t, "mosquitto_pub is not installed (apt-get install mosquitto-clients)")
	}
	v := newVenue(t, 5, "g1", "g2")
	v.startServe("")
	g2 := v.startGate("g2", "")
	waitFor(t, 10*time.Second, "g2 connected", func() bool { return strings.Contains(g2.err.String(), "connected to broker") })
	ids := make([]string, 4)
	for i := range ids {
		ids[i] = ticketOfCode(t, v, v.codes[i])
	}
	raw, err := verify.Base45Decode(v.codes[1][3:])
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 1 // the issuer signature's last byte
	forgedCode := v.codes[1][:3] + verify.Base45Encode(raw)
	now := time.Now().UTC()
	var entries []json.RawMessage
	for i, code := range []string{"", forgedCode, v.codes[4], "G1:NOT-A-CODE"} {
		entries = append(entries, jsonOf(map[string]any{"seq": i + 1, "id": fmt.Sprintf("f00d-%d", i+1), "gate": "g1", "event": "E",
			"verdict": "admit", "reason": "ok", "ticket": ids[i], "at": now, "code": code}))
	}
	publish(t, v.mqtt, "g1", v.pass["g1"], wire.GateTopic(testVenue, "g1", wire.KindEntries),
		jsonOf(wire.Batch{V: wire.Version, Gate: "g1", Instance: "f00d", First: 1, Last: 4, SentAt: now, Entries: entries}))
	waitFor(t, 10*time.Second, "the centre books the forged claims", func() bool { return v.gateEntries("g1") == 4 })
	var page struct {
		Alerts []struct {
			Gate, Kind, Ticket string
		}
	}
	if err := v.get("/api/v1/alerts", &page); err != nil {
		t.Fatal(err)
	}
	alerts := page.Alerts
	if len(alerts) != 4 {
		t.Errorf("alerts: %+v; want 4 against g1 (tickets %v)\n%s", alerts, ids, v.serve.err)
	}
	for _, a := range alerts {
		if a.Gate != "g1" || a.Kind != "unproven" {
			t.Errorf("alert %+v; want unproven at g1", a)
		}
	}
	time.Sleep(time.Second) // a fan-out, had there been one, would be here by now
	g2.scan(v.codes[:4]...)
	for _, r := range g2.waitDecisions(4, 10*time.Second) {
		if r.Verdict != "admit" {
			t.Errorf("g2 after g1's forged claims: %+v; want admit", r)
		}
	}
	if cs := v.conflicts(); len(cs) != 0 {
		t.Errorf("conflicts: %+v; forged claims are no uses", cs)
	}
}

func tail(s string, n int) string {
	ls := strings.Split(s, "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

// TestCatchupWaitUnreachable: a gate whose broker cannot be reached does
// not wait catchup_wait for a catch-up that cannot come: it decides at
// once, on what it holds.
func TestCatchupWaitUnreachable(t *testing.T) {
	v := newVenue(t, 1, "g1")
	dead := fmt.Sprintf("tcp://127.0.0.1:%d", mqtttest.FreePort(t)) // nothing listens there
	start := time.Now()
	g1 := v.startGate("g1", dead, "--catchup-wait", "30s")
	g1.scan(v.codes[0])
	r := g1.waitDecisions(1, 10*time.Second)[0]
	if r.Verdict != "admit" {
		t.Fatalf("offline gate: %+v", r)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the first decision took %s", took)
	}
	if !strings.Contains(g1.err.String(), "deciding without the centre's catch-up") {
		t.Errorf("no word of deciding without the catch-up:\n%s", g1.err)
	}
}

// waitSlowly is waitFor for conditions that copy megabytes of output: it
// looks every quarter second, not every 20 ms.
func waitSlowly(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	waitFor(t, timeout, what, func() bool {
		if cond() {
			return true
		}
		time.Sleep(250 * time.Millisecond)
		return false
	})
}
