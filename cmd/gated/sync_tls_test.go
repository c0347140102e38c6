package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pki writes a CA, a broker certificate for 127.0.0.1, and client
// certificates whose common names are gate ids.
type pki struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	CAFile string
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	p.caKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gated test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.ca, _ = x509.ParseCertificate(der)
	p.CAFile = filepath.Join(p.dir, "ca.crt")
	os.WriteFile(p.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	return p
}

// issue writes NAME.crt and NAME.key; server certificates are for 127.0.0.1.
func (p *pki) issue(t testing.TB, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// A gate logs in to the embedded broker over TLS with a client
// certificate (its common name is the gate id) and no password.
func TestSyncTLSClientCertificate(t *testing.T) {
	v := newVenue(t, 2, "g1")
	p := newPKI(t)
	srvCert, srvKey := p.issue(t, "broker", true)
	g1Cert, g1Key := p.issue(t, "g1", false)
	v.startServe("", "--tls-cert", srvCert, "--tls-key", srvKey, "--tls-ca", p.CAFile)
	url := fmt.Sprintf("ssl://127.0.0.1:%d", v.mqtt)
	g1 := startProc(t, "gated", "run", "--data", v.data("g1"), "--gate", "g1", "--venue", testVenue, "--output", "json",
		"--broker", url, "--tls-ca", p.CAFile, "--tls-cert", g1Cert, "--tls-key", g1Key)
	waitFor(t, 10*time.Second, "g1 connects over TLS", func() bool { return strings.Contains(g1.err.String(), "connected to broker") })
	g1.scan(v.codes[0])
	waitFor(t, 10*time.Second, "the entry reaches the centre", func() bool { return len(v.entries()) == 1 })

	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		return
	}
	// A certificate from the same CA for a gate the centre does not know
	// is refused, and so is a client without a certificate.
	g9Cert, g9Key := p.issue(t, "g9", false)
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
