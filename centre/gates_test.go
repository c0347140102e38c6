package centre

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gated-dev/gated/wire"
)

// TestGateOnlineFollowsHeartbeat: a gate that stops sending status (no will
// reached the centre: it restarted, or the broker did) shows offline after
// three missed heartbeats, also in a centre opened after the last one.
func TestGateOnlineFollowsHeartbeat(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, nil); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)
	var now atomic.Pointer[time.Time]
	now.Store(&t0)
	clock := func() time.Time { return *now.Load() }
	c, err := Open(dir, clock)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.GateStatus("v", &wire.Status{V: wire.Version, Gate: "g1", Online: true}); err != nil {
		t.Fatal(err)
	}
	online := func(c *Centre) bool {
		gs, err := c.Gates()
		if err != nil || len(gs) != 1 {
			t.Fatalf("gates: %+v %v", gs, err)
		}
		return gs[0].Online
	}
	for _, tc := range []struct {
		after  time.Duration
		online bool
	}{
		{0, true},
		{StatusEvery, true},
		{OfflineAfter, true},
		{OfflineAfter + time.Second, false},
		{time.Hour, false},
	} {
		at := t0.Add(tc.after)
		now.Store(&at)
		if got := online(c); got != tc.online {
			t.Errorf("%v after the last status: online %v, want %v", tc.after, got, tc.online)
		}
	}
	c.Close()
	at := t0.Add(time.Minute)
	c, err = Open(dir, func() time.Time { return at })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if online(c) {
		t.Error("a silent gate shows online after a centre restart")
	}
}

// TestUnknownGateCreatesNoRecord runs the sync server on the real embedded
// broker: a status on the topic of a gate with no login (a removed gate's
// retained status, a login the broker refused) books nothing; a gate with
// its login is booked.
func TestUnknownGateCreatesNoRecord(t *testing.T) {
	v := startEmbeddedVenue(t)
	// Retained before the server subscribes, as a broker keeps it.
	ghost, _ := json.Marshal(wire.Status{V: wire.Version, Gate: "g9", Online: true})
	if err := v.e.Publish(wire.GateTopic("arena", "g9", wire.KindStatus), ghost, true); err != nil {
		t.Fatal(err)
	}
	srv := NewServer(v.c, v.e, ServerOptions{KnownGate: v.c.GateLogin})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	g1, _, err := v.client(t, "g1", GateClientID("arena", "g1"))
	if err != nil {
		t.Fatal(err)
	}
	st, _ := json.Marshal(wire.Status{V: wire.Version, Gate: "g1", Online: true})
	g1.Publish(wire.GateTopic("arena", "g1", wire.KindStatus), 1, true, st).WaitTimeout(5 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		gs, err := v.c.Gates()
		if err != nil {
			t.Fatal(err)
		}
		if len(gs) == 1 && gs[0].Gate == "g1" {
			break
		}
		if len(gs) > 1 || time.Now().After(deadline) {
			t.Fatalf("gates: %+v, want g1 only", gs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGateAPI(t *testing.T) {
	v := startEmbeddedVenue(t)
	tok, err := CreateAPIToken(v.c.dir)
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(NewAPI(v.c, tok, nil))
	defer api.Close()
	_, lost, err := v.client(t, "g1", GateClientID("arena", "g1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{"POST", "/api/v1/gates/arena/g1/lock", "", 401},
		{"DELETE", "/api/v1/gates/arena/g1", "wrong", 401},
		{"POST", "/api/v1/gates/arena/g1/lock", tok, 200},
		{"POST", "/api/v1/gates/other/g1/lock", tok, 404},
		{"POST", "/api/v1/gates/arena/g7/unlock", tok, 404},
		{"POST", "/api/v1/gates/arena/g1/unlock", tok, 200},
		{"DELETE", "/api/v1/gates/arena/g2", tok, 200},
		{"DELETE", "/api/v1/gates/arena/g2", tok, 404},
	} {
		if got := apiStatus(t, api.URL, tc.method, tc.path, tc.token, "{}"); got != tc.want {
			t.Errorf("%s %s (token %q): %d, want %d", tc.method, tc.path, tc.token, got, tc.want)
		}
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Error("the lock through the API left g1 connected")
	}
	// The books show the lock while it lasts.
	for _, locked := range []bool{true, false} {
		if err := v.c.LockGate("arena", "g1", locked); err != nil {
			t.Fatal(err)
		}
		if err := v.c.NoteGate("arena", "g1", "E"); err != nil {
			t.Fatal(err)
		}
		gs, err := v.c.Gates()
		if err != nil || len(gs) != 1 || gs[0].Locked != locked {
			t.Errorf("gates with g1 locked %v: %+v %v", locked, gs, err)
		}
	}
	if _, _, err := v.client(t, "g1", GateClientID("arena", "g1")); err != nil {
		t.Errorf("g1 after unlock: %v", err)
	}
	if _, _, err := v.client(t, "g2", GateClientID("arena", "g2")); err == nil {
		t.Error("g2 logged in after it was removed")
	}
}
