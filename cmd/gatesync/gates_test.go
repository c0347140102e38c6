package main

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/internal/cli"
)

// TestGateCommands runs remove-gate, lock-gate and unlock-gate on central.db
// (--dir) and through a serving API (--server), and checks what the
// broker's login check then says.
func TestGateCommands(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := gatesync(t, time.Now, "init", "--dir", dir); code != 0 {
		t.Fatal(stderr)
	}
	pass := map[string]string{}
	for _, g := range []string{"g1", "g2"} {
		code, out, stderr := gatesync(t, time.Now, "add-gate", "--dir", dir, "--venue", "arena", "--gate", g)
		if code != 0 {
			t.Fatal(stderr)
		}
		pass[g] = strings.Fields(out)[len(strings.Fields(out))-1]
	}
	canLogin := func(c *centre.Centre, g string) bool { _, ok := c.CheckGateUser(g, pass[g]); return ok }

	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"lock-gate", "--dir", dir, "--venue", "arena", "--gate", "g1"}, cli.ExitOK, "g1 at venue arena locked"},
		{[]string{"lock-gate", "--dir", dir, "--venue", "other", "--gate", "g1"}, cli.ExitUsage, "no such gate"},
		{[]string{"lock-gate", "--dir", dir, "--gate", "g1"}, cli.ExitUsage, "--venue VENUE and --gate GATE are required"},
		{[]string{"unlock-gate", "--venue", "arena", "--gate", "g1"}, cli.ExitUsage, "--dir DIR (or --server URL)"},
	} {
		code, out, stderr := gatesync(t, time.Now, tc.args...)
		if code != tc.code || !strings.Contains(out+stderr, tc.out) {
			t.Errorf("%v: exit %d, %q %q; want %d with %q", tc.args, code, out, stderr, tc.code, tc.out)
		}
	}
	c, err := centre.Open(dir, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if canLogin(c, "g1") || !canLogin(c, "g2") {
		t.Fatalf("after lock-gate g1: g1 %v, g2 %v", canLogin(c, "g1"), canLogin(c, "g2"))
	}

	tok, err := centre.ReadAPIToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(centre.NewAPI(c, tok, nil))
	defer api.Close()
	for _, tc := range []struct {
		args  []string
		code  int
		out   string
		g1ok  bool
		g2ok  bool
		token string
	}{
		{[]string{"unlock-gate", "--venue", "arena", "--gate", "g1"}, cli.ExitOK, "unlocked", true, true, tok},
		{[]string{"lock-gate", "--venue", "arena", "--gate", "g1"}, cli.ExitFail, "401", true, true, "wrong"},
		{[]string{"remove-gate", "--venue", "arena", "--gate", "g2"}, cli.ExitOK, "g2 at venue arena removed", true, false, tok},
		{[]string{"remove-gate", "--venue", "arena", "--gate", "g2"}, cli.ExitFail, "404", true, false, tok},
	} {
		args := append(tc.args, "--server", api.URL, "--token", tc.token)
		code, out, stderr := gatesync(t, time.Now, args...)
		if code != tc.code || !strings.Contains(out+stderr, tc.out) {
			t.Errorf("%v: exit %d, %q %q; want %d with %q", tc.args, code, out, stderr, tc.code, tc.out)
		}
		if canLogin(c, "g1") != tc.g1ok || canLogin(c, "g2") != tc.g2ok {
			t.Errorf("after %v: g1 %v, g2 %v", tc.args, canLogin(c, "g1"), canLogin(c, "g2"))
		}
	}
}
