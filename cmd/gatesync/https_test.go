package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/internal/lockedbuf"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with the given
// serial and returns it.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "gatesync test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
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

	first := writeCert(t, certFile, keyFile, 1)
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
	served := func(trust *x509.Certificate) (int64, int, error) {
		pool := x509.NewCertPool()
		pool.AddCert(trust)
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
		serial, status, err = served(first)
		return err == nil
	})
	if serial != 1 || status != http.StatusOK {
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
	second := writeCert(t, certFile, keyFile, 2)
	if serial, status, err := served(second); err != nil || serial != 2 || status != http.StatusOK {
		t.Fatalf("after renewal: serial %d, status %d, err %v\n%s", serial, status, err, log.String())
	}
	if !strings.Contains(log.String(), "HTTPS certificate reloaded") {
		t.Errorf("the reload is not logged:\n%s", log.String())
	}
	// A broken pair keeps the last good certificate serving, with a warning.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if serial, _, err := served(second); err != nil || serial != 2 {
		t.Fatalf("with a broken key file: serial %d, err %v", serial, err)
	}
	if !strings.Contains(log.String(), "does not load") {
		t.Errorf("a broken certificate pair is not reported:\n%s", log.String())
	}
}
