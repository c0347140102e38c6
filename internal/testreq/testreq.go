// Package testreq decides what a test does when something it needs from the
// machine is missing: a peer (mosquitto, PostgreSQL, Chromium), a tool
// (tmux, mosquitto_pub, systemd-analyze, a cross compiler) or a privilege (root
// for tmpfs and FUSE mounts).
//
// By default such a test skips, so a developer without the peer can still
// run the rest. With GATED_TEST_REQUIRE=1 in the environment, as .ci/run
// sets it, the same call fails the test and names what is missing: a CI run
// cannot pass by skipping. Deliberate skips (-short) do not go through here.
package testreq

import (
	"fmt"
	"os"
	"testing"
)

// Env is the environment variable that turns a missing peer into a
// failure; any value but "" and "0" switches it on.
const Env = "GATED_TEST_REQUIRE"

// TB is the part of testing.TB the helpers use, so benchmark programs can
// pass their own.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

// Required reports whether missing peers fail tests instead of skipping
// them.
func Required() bool {
	v := os.Getenv(Env)
	return v != "" && v != "0"
}

// Skipf skips the test because what the message names is missing, or fails
// it when Required.
func Skipf(t TB, format string, args ...any) {
	t.Helper()
	if why := fmt.Sprintf(format, args...); !failed(t, why, "skipping") {
		t.Skipf("%s", why)
	}
}

// Partf is Skipf for a part of a test: a test whose last checks need a
// tool calls it where the tool is missing and returns. It fails the test
// when Required; otherwise it logs that the part was left out.
func Partf(t testing.TB, format string, args ...any) {
	t.Helper()
	if why := fmt.Sprintf(format, args...); !failed(t, why, "leaving checks out") {
		t.Logf("checks left out: %s", why)
	}
}

// failed fails t, naming why, when Required, and reports whether it did.
func failed(t TB, why, instead string) bool {
	t.Helper()
	if !Required() {
		return false
	}
	t.Fatalf("missing: %s (%s is set, so this fails instead of %s)", why, Env, instead)
	return true
}
