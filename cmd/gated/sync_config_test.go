package main

import (
	"strings"
	"testing"
)

// Bad sync settings stop gated run at start with exit 2 and a message
// that says what to fix.
func TestSyncConfigErrors(t *testing.T) {
	v := newVenue(t, 1, "g1")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--broker", "foo"}, "use a URL like tcp://HOST:1883"},
		{[]string{"--broker", "http://x:1", "--venue", "v"}, `scheme "http"`},
		{[]string{"--broker", "tcp://127.0.0.1:1"}, "a broker needs a venue"},
		{[]string{"--broker", "tcp://127.0.0.1:1", "--venue", "a/b"}, `venue "a/b"`},
		{[]string{"--venue", "v"}, "without a broker"},
		{[]string{"--broker", "tcp://127.0.0.1:1", "--venue", "v", "--tls-cert", "/nonexistent"}, "tls_cert and tls_key go together"},
		{[]string{"--broker", "tcp://127.0.0.1:1", "--venue", "v", "--tls-ca", "/nonexistent"}, "TLS file"},
	} {
		r := runBin(t, strings.NewReader(""), "gated", append([]string{"run", "--data", v.data("g1"), "--gate", "g1"}, tc.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}
