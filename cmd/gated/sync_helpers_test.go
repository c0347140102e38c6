package main

// Helpers of the sync end-to-end tests: a centre directory with gates,
// gatesync serve and gated run as real processes, and the HTTP API.

import (
	"encoding/json"
	"fmt"
	"github.com/gated-dev/gated/internal/lockedbuf"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gated-dev/gated/internal/mqtttest"
)

type proc struct {
	t        testing.TB
	name     string
	cmd      *exec.Cmd
	in       io.WriteCloser
	out, err *lockedbuf.Buffer
	done     chan struct{}
}

func startProc(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, out: &lockedbuf.Buffer{}, err: &lockedbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin(name), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.err
	var err error
	if p.in, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits.
func (p *proc) stop() {
	if p.running() {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Errorf("%s did not stop on SIGTERM: %s", p.name, p.err)
		p.kill()
	}
}

// kill sends SIGKILL and waits.
func (p *proc) kill() {
	if p.running() {
		p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

func (p *proc) scan(codes ...string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, strings.Join(codes, "\n")+"\n"); err != nil {
		p.t.Fatalf("write to %s: %v", p.name, err)
	}
}

// decisions are gated's --output json lines so far.
func (p *proc) decisions() []record { return records(p.t, p.out.String()) }

// waitDecisions waits until gated printed n decisions and returns them.
func (p *proc) waitDecisions(n int, timeout time.Duration) []record {
	p.t.Helper()
	waitFor(p.t, timeout, fmt.Sprintf("%s printed %d decisions", p.name, n), func() bool {
		return len(nonEmptyLines(p.out.String())) >= n
	})
	return p.decisions()
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// venue is a centre with tickets and its gates, all in one temp dir.
type venue struct {
	t      testing.TB
	dir    string
	centre string
	bundle string
	codes  []string
	pass   map[string]string // gate -> embedded broker password
	http   int
	mqtt   int
	token  string
	serve  *proc
}

const testVenue = "arena"

func newVenue(t testing.TB, tickets int, gates ...string) *venue {
	t.Helper()
	return newVenueIssuing(t, []string{"--count", fmt.Sprint(tickets)}, gates...)
}

// newVenueIssuing is newVenue with its tickets issued by gatesync issue
// with issue (--count N and any other flags).
func newVenueIssuing(t testing.TB, issue []string, gates ...string) *venue {
	t.Helper()
	d := t.TempDir()
	v := &venue{t: t, dir: d, centre: filepath.Join(d, "centre"), bundle: filepath.Join(d, "bundle.json"), pass: map[string]string{}}
	must(t, runBin(t, nil, "gatesync", "init", "--dir", v.centre))
	v.codes = nonEmptyLines(must(t, runBin(t, nil, "gatesync", append([]string{"issue", "--dir", v.centre, "--event", "E"}, issue...)...)))
	must(t, runBin(t, nil, "gatesync", "export", "--dir", v.centre, "--event", "E", "--out", v.bundle))
	for _, g := range gates {
		must(t, runBin(t, nil, "gated", "provision", "--data", v.data(g), v.bundle))
		f := strings.Fields(must(t, runBin(t, nil, "gatesync", "add-gate", "--dir", v.centre, "--venue", testVenue, "--gate", g)))
		v.pass[g] = f[len(f)-1]
	}
	tok, err := os.ReadFile(filepath.Join(v.centre, "api.token"))
	if err != nil {
		t.Fatal(err)
	}
	v.token = strings.TrimSpace(string(tok))
	v.http, v.mqtt = mqtttest.FreePort(t), mqtttest.FreePort(t)
	return v
}

func (v *venue) data(gate string) string { return filepath.Join(v.dir, "gate-"+gate) }

func (v *venue) api() string { return fmt.Sprintf("http://127.0.0.1:%d", v.http) }

// startServe runs gatesync serve: with broker "" the embedded one.
func (v *venue) startServe(broker string, extra ...string) *proc {
	v.t.Helper()
	args := []string{"serve", "--dir", v.centre, "--listen", fmt.Sprintf("127.0.0.1:%d", v.http), "--log-level", "debug"}
	if broker == "" {
		args = append(args, "--mqtt-listen", fmt.Sprintf("127.0.0.1:%d", v.mqtt))
	} else {
		args = append(args, "--broker", broker)
	}
	v.serve = startProc(v.t, "gatesync", append(args, extra...)...)
	waitFor(v.t, 10*time.Second, "gatesync serve answers /healthz", func() bool {
		if !v.serve.running() {
			v.t.Fatalf("gatesync serve exited: %s", v.serve.err)
		}
		r, err := http.Get(v.api() + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil && r.StatusCode == 200
	})
	return v.serve
}

// startGate runs gated run against broker (embedded when "").
func (v *venue) startGate(gate, broker string, extra ...string) *proc {
	v.t.Helper()
	args := []string{"run", "--data", v.data(gate), "--gate", gate, "--output", "json", "--log-level", "debug", "--venue", testVenue}
	if broker == "" {
		args = append(args, "--broker", fmt.Sprintf("tcp://127.0.0.1:%d", v.mqtt), "--username", gate, "--password", v.pass[gate])
	} else {
		args = append(args, "--broker", broker)
	}
	return startProc(v.t, "gated", append(args, extra...)...)
}

func (v *venue) get(path string, out any) error {
	req, _ := http.NewRequest(http.MethodGet, v.api()+path, nil)
	req.Header.Set("Authorization", "Bearer "+v.token)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer r.Body.Close()
	if r.StatusCode != 200 {
		b, _ := io.ReadAll(r.Body)
		return fmt.Errorf("GET %s: %s %s", path, r.Status, b)
	}
	return json.NewDecoder(r.Body).Decode(out)
}

type apiRecord struct {
	N     uint64 `json:"n"`
	Gate  string `json:"gate"`
	ID    string `json:"id"`
	Entry record `json:"entry"`
}

// entries reads every entry in the centre's books (nil while the API is down).
func (v *venue) entries() []apiRecord {
	var page struct {
		Entries []apiRecord `json:"entries"`
	}
	if err := v.get("/api/v1/entries?since=0&limit=100000", &page); err != nil {
		return nil
	}
	return page.Entries
}

type apiConflict struct {
	Ticket string `json:"ticket"`
	Kind   string `json:"kind"`
	First  struct {
		Gate string `json:"gate"`
	} `json:"first"`
	Second struct {
		Gate string `json:"gate"`
	} `json:"second"`
}

func (v *venue) conflicts() []apiConflict {
	var cs []apiConflict
	if err := v.get("/api/v1/conflicts", &cs); err != nil {
		v.t.Fatal(err)
	}
	return cs
}

// checkExactlyOnce asserts the centre holds each of want's journal ids
// exactly once and nothing else.
func checkExactlyOnce(t testing.TB, got []apiRecord, want map[string]bool) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range got {
		seen[r.ID]++
		if r.Entry.ID != r.ID {
			t.Fatalf("record %d: id %q, entry id %q", r.N, r.ID, r.Entry.ID)
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("entry %s is in the centre's books %d times", id, seen[id])
		}
	}
	if len(got) != len(want) {
		t.Errorf("centre holds %d entries, want %d", len(got), len(want))
	}
}

// journalIDs reads a stopped gate's journal ids.
func journalIDs(t testing.TB, data string) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, r := range records(t, must(t, runBin(t, nil, "gated", "journal", "--data", data))) {
		ids[r.ID] = true
	}
	return ids
}
