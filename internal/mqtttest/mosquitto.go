// Package mqtttest runs a real mosquitto broker for tests and benchmarks:
// a generated configuration on a free 127.0.0.1 port, optional password
// file and ACL, stopped, killed and restarted on the same port at will.
package mqtttest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gated-dev/gated/internal/testreq"
)

// TB is the part of testing.TB the helpers use, so benchmark programs can
// pass their own.
type TB interface {
	testreq.TB
	Cleanup(func())
	TempDir() string
}

// Options describe the broker. The zero value is an anonymous broker
// without ACL.
type Options struct {
	// Users are username -> password; when set, anonymous clients are
	// refused.
	Users map[string]string
	// ACL is the text of an ACL file (see deploy/mosquitto/acl).
	ACL string
	// Extra lines for the configuration.
	Extra []string
}

// Mosquitto is a running (or stopped) broker.
type Mosquitto struct {
	Port int
	URL  string // tcp://127.0.0.1:PORT
	conf string
	log  *bytes.Buffer
	cmd  *exec.Cmd
}

// Installed reports whether mosquitto is on PATH (or in /usr/sbin).
func Installed() (string, bool) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, true
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto", true
	}
	return "", false
}

// FreePort returns a port nothing listens on right now.
func FreePort(t TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// New writes a configuration for a broker on a free port; Start runs it.
// It skips the test when mosquitto is not installed.
func New(t TB, o Options) *Mosquitto {
	t.Helper()
	if _, ok := Installed(); !ok {
		testreq.Skipf(t, "mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
	}
	dir := t.TempDir()
	m := &Mosquitto{Port: FreePort(t), conf: filepath.Join(dir, "mosquitto.conf"), log: &bytes.Buffer{}}
	m.URL = fmt.Sprintf("tcp://127.0.0.1:%d", m.Port)
	conf := []string{
		fmt.Sprintf("listener %d 127.0.0.1", m.Port),
		"persistence false",
		"max_queued_messages 100000",
		"max_inflight_messages 100",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
	}
	if os.Geteuid() == 0 {
		// As root, mosquitto drops to the mosquitto user, which cannot read
		// the test's private temp files.
		conf = append(conf, "user root")
	}
	if len(o.Users) > 0 {
		pw := filepath.Join(dir, "passwd")
		var lines []string
		for u, p := range o.Users {
			lines = append(lines, u+":"+p)
		}
		if err := os.WriteFile(pw, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatalf("%v", err)
		}
		if out, err := exec.Command("mosquitto_passwd", "-U", pw).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd -U: %v: %s", err, out)
		}
		conf = append(conf, "allow_anonymous false", "password_file "+pw)
	} else {
		conf = append(conf, "allow_anonymous true")
	}
	if o.ACL != "" {
		acl := filepath.Join(dir, "acl")
		if err := os.WriteFile(acl, []byte(o.ACL), 0o600); err != nil {
			t.Fatalf("%v", err)
		}
		conf = append(conf, "acl_file "+acl)
	}
	conf = append(conf, o.Extra...)
	if err := os.WriteFile(m.conf, []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(m.Stop)
	return m
}

// Start runs the broker and waits until it accepts connections.
func (m *Mosquitto) Start(t TB) {
	t.Helper()
	path, _ := Installed()
	m.cmd = exec.Command(path, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", m.Port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("mosquitto did not listen on %d: %s", m.Port, m.log)
}

// Stop ends the broker (SIGTERM) and waits for it; a no-op when stopped.
func (m *Mosquitto) Stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.cmd.Wait()
	m.cmd = nil
}

// Log is what the broker printed.
func (m *Mosquitto) Log() string { return m.log.String() }

// ACL is the ACL of deploy/mosquitto/acl for one venue: the centre user
// may do anything under gated/v1/, a gate (username = gate id) only its
// own topics.
func ACL(venue, centreUser string) string {
	return fmt.Sprintf(`user %[2]s
topic readwrite gated/v1/#

pattern write gated/v1/%[1]s/%%u/entries
pattern write gated/v1/%[1]s/%%u/status
pattern write gated/v1/%[1]s/%%u/hello
pattern read gated/v1/%[1]s/%%u/ack
pattern read gated/v1/%[1]s/%%u/sync
pattern read gated/v1/%[1]s/whitelist
pattern read gated/v1/%[1]s/live
`, venue, centreUser)
}
