// Package scaleouttest runs gatesync scaled out, as real processes, for
// tests and benchmarks: one mosquitto (passwords and the deploy ACL), one
// throwaway PostgreSQL, several `gatesync serve` instances sharing ingest
// through $share subscriptions, and `gated run` gates whose outboxes hold
// a backlog of entries written beforehand.
package scaleouttest

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/gated-dev/gated/internal/lockedbuf"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/internal/mqtttest"
	"github.com/gated-dev/gated/internal/pgtest"
	"github.com/gated-dev/gated/verify"
	"github.com/jackc/pgx/v5"
)

// TB is what the harness needs of a test or benchmark.
type TB interface {
	mqtttest.TB
	Logf(format string, args ...any)
}

// Venue is the venue of every gate.
const Venue = "arena"

// ShareGroup is the instances' shared subscription group.
const ShareGroup = "gatesync"

// Options describe a deployment.
type Options struct {
	Gates     int // gates g1..gN
	Backlog   int // entries waiting in each gate's outbox
	Instances int // gatesync serve instances; the first is the primary
	// Durable runs PostgreSQL with fsync on (benchmarks).
	Durable bool
	// Bbolt keeps the books in the primary's central.db instead, as one
	// instance does without --store: the baseline. Instances must be 1.
	Bbolt bool
	// LogLevel of the gatesync instances (default info).
	LogLevel string
}

// Deployment is a running (or ready) deployment.
type Deployment struct {
	PG        *pgtest.Cluster
	Broker    *mqtttest.Mosquitto
	Instances []*Proc
	Gates     []*Proc
	o         Options
	t         TB
	bin, dir  string
	dirs      []string // centre directory of each instance
	pass      map[string]string

	mu   sync.Mutex
	conn *pgx.Conn // Query's
}

// Build builds gated and gatesync into a temporary directory and returns it.
func Build(t TB) string {
	t.Helper()
	mod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(mod)) == "" {
		t.Fatalf("scaleouttest: find the module root (go env GOMOD): %v", err)
	}
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+"/", "./cmd/gated", "./cmd/gatesync")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(mod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scaleouttest: build: %v\n%s", err, out)
	}
	return bin
}

// New prepares a deployment from the binaries in bin: PostgreSQL and the
// broker run, the centre directory and its copies exist, the gates'
// backlogs are written. Nothing of gated or gatesync runs yet.
func New(t TB, bin string, o Options) *Deployment {
	t.Helper()
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.Bbolt && o.Instances != 1 {
		t.Fatalf("scaleouttest: the bbolt store serves one instance")
	}
	d := &Deployment{o: o, t: t, bin: bin, dir: t.TempDir(), pass: map[string]string{"gatesync": "centre-secret"}}
	for i := 1; i <= o.Gates; i++ {
		d.pass[gate(i)] = "pw-" + gate(i)
	}
	d.Broker = mqtttest.New(t, mqtttest.Options{Users: d.pass, ACL: mqtttest.ACL(Venue, "gatesync")})
	d.Broker.Start(t)
	d.PG = pgtest.Start(t, pgtest.Options{Durable: o.Durable})

	primary := filepath.Join(d.dir, "centre")
	bundle := filepath.Join(d.dir, "bundle.json")
	d.run("gatesync", "init", "--dir", primary)
	d.run("gatesync", "issue", "--dir", primary, "--event", "E", "--count", "1")
	d.run("gatesync", "export", "--dir", primary, "--event", "E", "--out", bundle)
	d.dirs = []string{primary}
	// A second instance's directory: the root key (acks and live messages
	// are signed with it) and the API token; its central.db starts empty
	// (re-entry tickets come from the primary through PostgreSQL).
	for i := 1; i < o.Instances; i++ {
		cp := filepath.Join(d.dir, fmt.Sprintf("centre-%d", i))
		if err := os.MkdirAll(cp, 0o700); err != nil {
			t.Fatalf("%v", err)
		}
		for _, f := range []string{"root.key", "root.pub", "api.token"} {
			b, err := os.ReadFile(filepath.Join(primary, f))
			if err != nil {
				t.Fatalf("copy centre directory: %v", err)
			}
			if err := os.WriteFile(filepath.Join(cp, f), b, 0o600); err != nil {
				t.Fatalf("copy centre directory: %v", err)
			}
		}
		d.dirs = append(d.dirs, cp)
	}
	var wg sync.WaitGroup
	errs := make([]error, o.Gates+1)
	for i := 1; i <= o.Gates; i++ {
		data := d.data(i)
		d.run("gated", "provision", "--data", data, bundle)
		wg.Go(func() { errs[i] = backlog(data, gate(i), o.Backlog) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("gate backlog: %v", err)
		}
	}
	return d
}

func gate(i int) string { return fmt.Sprintf("g%d", i) }

func (d *Deployment) data(i int) string { return filepath.Join(d.dir, "gate-"+gate(i)) }

func (d *Deployment) run(name string, args ...string) {
	d.t.Helper()
	out, err := exec.Command(filepath.Join(d.bin, name), args...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// backlog writes n denied scans into a gate store's journal and outbox.
func backlog(data, gate string, n int) error {
	s, err := cache.Open(data, &cache.Options{NoSync: true, MaxBatch: 1000})
	if err != nil {
		return err
	}
	defer s.Close()
	st, err := s.State()
	if err != nil {
		return err
	}
	v := verify.NewVerifier(verify.Policy{Event: st.Event}, st.Trust)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < n; i += 32 {
				if _, err := s.Record(context.Background(), v, cache.Scan{At: time.Now(), Gate: gate, Scanner: "bench",
					Pre: verify.Result{Reason: verify.ReasonMalformed, Detail: "backlog entry"}}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// StartInstances starts every gatesync serve instance and waits until each
// answers its API and is connected to the broker.
func (d *Deployment) StartInstances() {
	d.t.Helper()
	for i := range d.o.Instances {
		d.StartInstance(i)
	}
	// The SUBSCRIBE goes out right after the CONNACK; give it a moment.
	time.Sleep(500 * time.Millisecond)
}

// StartInstance starts instance i (again).
func (d *Deployment) StartInstance(i int) *Proc {
	d.t.Helper()
	port := mqtttest.FreePort(d.t)
	args := []string{"serve", "--dir", d.dirs[i], "--broker", d.Broker.URL,
		"--broker-username", "gatesync", "--broker-password", d.pass["gatesync"],
		"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", d.o.LogLevel}
	if !d.o.Bbolt {
		args = append(args, "--store", d.PG.DSN, "--client-id", fmt.Sprintf("gatesync-%d", i), "--share-group", ShareGroup)
	}
	if i > 0 {
		args = append(args, "--ingest-only")
	}
	p := d.start(fmt.Sprintf("gatesync-%d", i), "gatesync", args...)
	p.API = fmt.Sprintf("http://127.0.0.1:%d", port)
	for len(d.Instances) <= i {
		d.Instances = append(d.Instances, nil)
	}
	d.Instances[i] = p
	d.waitFor(20*time.Second, p.Name+" serving and connected to the broker", func() bool {
		if !p.Running() {
			d.t.Fatalf("%s exited: %s", p.Name, p.Stderr())
		}
		r, err := http.Get(p.API + "/healthz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return strings.Contains(p.Stderr(), "connected to broker")
	})
	return p
}

// StartGates starts every gate's gated run.
func (d *Deployment) StartGates() {
	d.t.Helper()
	for i := 1; i <= d.o.Gates; i++ {
		g := gate(i)
		d.Gates = append(d.Gates, d.start(g, "gated", "run", "--data", d.data(i), "--gate", g, "--venue", Venue,
			"--broker", d.Broker.URL, "--username", g, "--password", d.pass[g], "--log-level", "info"))
	}
}

// GatesConnected waits until every gate has logged its connection to the
// broker.
func (d *Deployment) GatesConnected(timeout time.Duration) {
	d.t.Helper()
	d.waitFor(timeout, "every gate connected", func() bool {
		for _, g := range d.Gates {
			if !strings.Contains(g.Stderr(), "connected to broker") {
				return false
			}
		}
		return true
	})
}

// Total is how many entries the gates hold between them.
func (d *Deployment) Total() int { return d.o.Gates * d.o.Backlog }

// Query runs sql on the deployment's database and scans its one row.
func (d *Deployment) Query(sql string, dest ...any) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if d.conn == nil {
		conn, err := pgx.Connect(ctx, d.PG.DSN)
		if err != nil {
			return err
		}
		d.conn = conn
		d.t.Cleanup(func() { conn.Close(context.Background()) })
	}
	err := d.conn.QueryRow(ctx, sql).Scan(dest...)
	if err != nil && d.conn.IsClosed() {
		d.conn = nil
	}
	return err
}

// Stored is how many entries the books hold without a gap: the sum of
// every gate stream's stored-to, cheap to poll (-1 when the query fails).
// Tests count the entries themselves at the end.
func (d *Deployment) Stored() int {
	if d.o.Bbolt {
		return d.storedAPI()
	}
	var n int
	if err := d.Query("SELECT coalesce(sum(stored_to), 0)::int FROM streams", &n); err != nil {
		return -1
	}
	return n
}

// storedAPI sums the stored-to of the primary's gate states: the books in
// central.db can only be read through it while it runs.
func (d *Deployment) storedAPI() int {
	if len(d.Instances) == 0 {
		return -1
	}
	tok, err := os.ReadFile(filepath.Join(d.dirs[0], "api.token"))
	if err != nil {
		return -1
	}
	req, _ := http.NewRequest(http.MethodGet, d.Instances[0].API+"/api/v1/gates", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer r.Body.Close()
	var gs []struct {
		StoredTo int `json:"stored_to"`
	}
	if err := json.NewDecoder(r.Body).Decode(&gs); err != nil {
		return -1
	}
	n := 0
	for _, g := range gs {
		n += g.StoredTo
	}
	return n
}

// WaitStored waits until the books hold n entries and returns how long
// that took.
func (d *Deployment) WaitStored(n int, timeout time.Duration) time.Duration {
	d.t.Helper()
	t0 := time.Now()
	d.waitFor(timeout, fmt.Sprintf("%d entries stored", n), func() bool { return d.Stored() >= n })
	return time.Since(t0)
}

func (d *Deployment) waitFor(timeout time.Duration, what string, cond func() bool) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			for _, p := range append(append([]*Proc{}, d.Instances...), d.Gates...) {
				if p != nil {
					d.t.Logf("%s stderr:\n%s", p.Name, tail(p.Stderr(), 3000))
				}
			}
			d.t.Fatalf("timed out after %s waiting until %s (stored: %d)", timeout, what, d.Stored())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// Proc is a running gated or gatesync.
type Proc struct {
	Name string
	API  string // gatesync: its HTTP API
	cmd  *exec.Cmd
	err  *lockedbuf.Buffer
	done chan struct{}
}

func (d *Deployment) start(name, bin string, args ...string) *Proc {
	d.t.Helper()
	p := &Proc{Name: name, err: &lockedbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(d.bin, bin), args...)
	p.cmd.Stderr = p.err
	if err := p.cmd.Start(); err != nil {
		d.t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	d.t.Cleanup(p.Kill)
	return p
}

// Running reports whether the process runs.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits.
func (p *Proc) Kill() {
	if p.Running() {
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// Stop sends SIGTERM and waits.
func (p *Proc) Stop() {
	if p.Running() {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}

// Stderr is what the process logged so far.
func (p *Proc) Stderr() string { return p.err.String() }
