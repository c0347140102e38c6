package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/internal/lockedbuf"
	"github.com/gated-dev/gated/internal/testpki"
)

// install copies a certificate pair over the files serve reads, as a
// renewal tool does.
func install(t *testing.T, fromCert, fromKey, certFile, keyFile string) {
	t.Helper()
	for from, to := range map[string]string{fromCert: certFile, fromKey: keyFile} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestServeHTTPS: with --https-cert/--https-key the API, ticket page and
// dashboard listener speaks TLS only, and a renewed certificate is served
// from the next connection on without a restart.
func TestServeHTTPS(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs gatesync")
	}
	bins := webBins(t)
	gatesync := filepath.Join(bins, "gatesync")
	dir := t.TempDir()
	cdir := filepath.Join(dir, "centre")
	webRun(t, gatesync, "init", "--dir", cdir)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")

	// Usage errors first: exit 2, saying what to fix.
	for _, args := range [][]string{{"--https-cert", certFile}, {"--https-cert", certFile, "--https-key", keyFile}} {
		cmd := exec.Command(gatesync, append([]string{"serve", "--dir", cdir, "--mqtt-listen", "127.0.0.1:0"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), "--https-") {
			t.Fatalf("serve %v: %v, want exit 2 naming the flag; stderr:\n%s", args, err, stderr.String())
		}
	}

	ca := testpki.New(t)
	firstCert, firstKey := ca.Issue(t, "first", true)
	install(t, firstCert, firstKey, certFile, keyFile)
	first := testpki.Serial(t, firstCert).Int64()
	port := freePort(t)
	serve := exec.Command(gatesync, "serve", "--dir", cdir, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--mqtt-listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--https-cert", certFile, "--https-key", keyFile)
	log := &lockedbuf.Buffer{}
	serve.Stderr = log
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serve.Process.Kill(); serve.Wait() })

	// served returns the serial of the certificate a new connection sees
	// and the status of /healthz.
	served := func() (int64, int, error) {
		pool := x509.NewCertPool()
		pool.AddCert(ca.CA)
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
		r, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/healthz", port))
		if err != nil {
			return 0, 0, err
		}
		r.Body.Close()
		return r.TLS.PeerCertificates[0].SerialNumber.Int64(), r.StatusCode, nil
	}
	var serial int64
	var status int
	waitUntil(t, 10*time.Second, "gatesync serve answers over HTTPS", func() bool {
		var err error
		serial, status, err = served()
		return err == nil
	})
	if serial != first || status != http.StatusOK {
		t.Fatalf("HTTPS /healthz: certificate serial %d, status %d", serial, status)
	}
	// Plain HTTP on the same port gets no API.
	if r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)); err == nil {
		if r.StatusCode == http.StatusOK {
			t.Fatal("plain HTTP reached the API on an HTTPS listener")
		}
		r.Body.Close()
	}

	// Renewal: new files in place; the next connection sees them.
	time.Sleep(10 * time.Millisecond) // a distinct modification time on coarse clocks
	secondCert, secondKey := ca.Issue(t, "second", true)
	install(t, secondCert, secondKey, certFile, keyFile)
	second := testpki.Serial(t, secondCert).Int64()
	if serial, status, err := served(); err != nil || serial != second || status != http.StatusOK {
		t.Fatalf("after renewal: serial %d, status %d, err %v\n%s", serial, status, err, log.String())
	}
	if !strings.Contains(log.String(), "HTTPS certificate reloaded") {
		t.Errorf("the reload is not logged:\n%s", log.String())
	}
	// A broken pair keeps the last good certificate serving, with a warning.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if serial, _, err := served(); err != nil || serial != second {
		t.Fatalf("with a broken key file: serial %d, err %v", serial, err)
	}
	if !strings.Contains(log.String(), "does not load") {
		t.Errorf("a broken certificate pair is not reported:\n%s", log.String())
	}
}
