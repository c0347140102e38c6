package main

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/internal/testpki"
	"github.com/gated-dev/gated/internal/testreq"
)

// A gate logs in to the embedded broker over TLS with a client
// certificate (its common name is the gate id) and no password.
func TestSyncTLSClientCertificate(t *testing.T) {
	v := newVenue(t, 2, "g1")
	p := testpki.New(t)
	srvCert, srvKey := p.Issue(t, "broker", true)
	g1Cert, g1Key := p.Issue(t, "g1", false)
	v.startServe("", "--tls-cert", srvCert, "--tls-key", srvKey, "--tls-ca", p.CAFile)
	url := fmt.Sprintf("ssl://127.0.0.1:%d", v.mqtt)
	g1 := startProc(t, "gated", "run", "--data", v.data("g1"), "--gate", "g1", "--venue", testVenue, "--output", "json",
		"--broker", url, "--tls-ca", p.CAFile, "--tls-cert", g1Cert, "--tls-key", g1Key)
	waitFor(t, 10*time.Second, "g1 connects over TLS", func() bool { return strings.Contains(g1.err.String(), "connected to broker") })
	g1.scan(v.codes[0])
	waitFor(t, 10*time.Second, "the entry reaches the centre", func() bool { return len(v.entries()) == 1 })

	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		testreq.Partf(t, "mosquitto_pub is not installed (apt-get install mosquitto-clients): refused certificates not tried")
		return
	}
	// A certificate from the same CA for a gate the centre does not know
	// is refused, and so is a client without a certificate.
	g9Cert, g9Key := p.Issue(t, "g9", false)
	for name, args := range map[string][]string{
		"unknown gate":   {"--cert", g9Cert, "--key", g9Key},
		"no certificate": {},
	} {
		cmd := exec.Command("mosquitto_pub", append([]string{"-h", "127.0.0.1", "-p", fmt.Sprint(v.mqtt), "--cafile", p.CAFile,
			"-q", "1", "-t", "gated/v1/arena/g9/status", "-m", "{}"}, args...)...)
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("%s: mosquitto_pub got in: %s", name, out)
		}
	}
}
