package main

// End-to-end tests through the real binaries: gatesync issues and exports,
// gated provisions and runs, exactly as an operator would script them.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gated-e2e-bin")
	if err != nil {
		panic(err)
	}
	binDir = dir
	for cmd, pkg := range map[string]string{"gated": ".", "gatesync": "../gatesync"} {
		b := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), pkg)
		if out, err := b.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", cmd, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// bin returns the path of a built binary.
func bin(name string) string { return filepath.Join(binDir, name) }

type result struct {
	stdout, stderr string
	code           int
}

func runBin(t testing.TB, stdin io.Reader, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin(name), args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func must(t testing.TB, r result) string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// record is a decision as gated prints it with --output json.
type record struct {
	Seq           uint64    `json:"seq"`
	ID            string    `json:"id"`
	Verdict       string    `json:"verdict"`
	Reason        string    `json:"reason"`
	Detail        string    `json:"detail"`
	Ticket        string    `json:"ticket"`
	Gate          string    `json:"gate"`
	At            time.Time `json:"at"`
	FirstUsedAt   time.Time `json:"first_used_at"`
	FirstUsedGate string    `json:"first_used_gate"`
}

func records(t testing.TB, s string) []record {
	t.Helper()
	var out []record
	for _, l := range nonEmptyLines(s) {
		var r record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("output line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// site is a centre directory and one gate's data directory.
type site struct {
	t      testing.TB
	centre string
	gate   string
}

func newSite(t testing.TB) *site {
	d := t.TempDir()
	s := &site{t: t, centre: filepath.Join(d, "centre"), gate: filepath.Join(d, "gate")}
	must(t, runBin(t, nil, "gatesync", "init", "--dir", s.centre))
	return s
}

func (s *site) issue(args ...string) []string {
	return nonEmptyLines(must(s.t, runBin(s.t, nil, "gatesync", append([]string{"issue", "--dir", s.centre}, args...)...)))
}

func (s *site) export(event string) string {
	b := filepath.Join(s.t.TempDir(), "bundle.json")
	must(s.t, runBin(s.t, nil, "gatesync", "export", "--dir", s.centre, "--event", event, "--out", b))
	return b
}

func (s *site) provision(event string) {
	must(s.t, runBin(s.t, nil, "gated", "provision", "--data", s.gate, s.export(event)))
}

func (s *site) scan(scans []string, args ...string) []record {
	in := strings.NewReader(strings.Join(scans, "\n") + "\n")
	r := runBin(s.t, in, "gated", append([]string{"run", "--data", s.gate, "--gate", "north-1", "--scanner", "stdin:", "--output", "json"}, args...)...)
	if r.code != 0 {
		s.t.Fatalf("gated run: exit %d\n%s", r.code, r.stderr)
	}
	return records(s.t, r.stdout)
}

// ticketOf learns a code's ticket id the way an operator would: a
// throwaway gate reports it.
func (s *site) ticketOf(code string) string {
	g := filepath.Join(s.t.TempDir(), "probe")
	must(s.t, runBin(s.t, nil, "gated", "provision", "--data", g, s.export("expo")))
	r := runBin(s.t, strings.NewReader(code+"\n"), "gated", "run", "--data", g, "--gate", "probe", "--output", "json")
	return records(s.t, must(s.t, r))[0].Ticket
}

func flipChar(code string, i int) string {
	b := []byte(code)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestEveryReason(t *testing.T) {
	s := newSite(t)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	valid := s.issue("--event", "expo", "--count", "5", "--not-before", past, "--not-after", future)
	ga := s.issue("--event", "expo", "--count", "1", "--zone", "GA")[0]
	vip := s.issue("--event", "expo", "--count", "1", "--zone", "VIP")[0]
	expired := s.issue("--event", "expo", "--count", "1", "--not-after", past)[0]
	early := s.issue("--event", "expo", "--count", "1", "--not-before", future)[0]
	otherEvent := s.issue("--event", "gala", "--count", "1")[0]
	revoked := s.issue("--event", "expo", "--count", "1")[0]
	transferred := s.issue("--event", "expo", "--count", "1")[0]

	must(t, runBin(t, nil, "gatesync", "revoke", "--dir", s.centre, "--ticket", s.ticketOf(revoked), "--reason", "refund"))
	newCode := nonEmptyLines(must(t, runBin(t, nil, "gatesync", "reissue", "--dir", s.centre, "--ticket", s.ticketOf(transferred))))[0]

	// Another centre: same key id 1 with another key; and its key 3, which we never trusted.
	forger := newSite(t)
	forged := forger.issue("--event", "expo", "--count", "1")[0]
	must(t, runBin(t, nil, "gatesync", "rotate-key", "--dir", forger.centre))
	must(t, runBin(t, nil, "gatesync", "rotate-key", "--dir", forger.centre))
	unknownKey := forger.issue("--event", "expo", "--count", "1")[0]

	s.provision("expo")
	binary := string([]byte{0x00, 0xff, 0xfe, 0x1b, '[', '2', 'J', 0x07})
	huge := strings.Repeat("G1:", 350_000)                  // a 1 MB line
	scans := append(append([]string{}, valid...), valid[0], // a second scan
		ga, vip, expired, early, otherEvent, revoked, transferred, newCode, forged, unknownKey,
		flipChar(valid[1], len(valid[1])-10), // tampered
		valid[2][:len(valid[2])-9],           // truncated
		"hello gate", "", "   ", binary, huge)
	recs := s.scan(scans, "--zone", "GA")

	want := []string{"ok", "ok", "ok", "ok", "ok", "already_used",
		"ok", "wrong_zone", "expired", "not_yet_valid", "wrong_event", "revoked", "superseded_serial", "ok",
		"bad_signature", "unknown_key", "bad_signature", "malformed", "malformed", "malformed", "malformed"}
	if len(recs) != len(want) {
		for _, r := range recs {
			t.Logf("%d %s %s %s", r.Seq, r.Verdict, r.Reason, r.Detail)
		}
		t.Fatalf("%d decisions, want %d (blank lines are not scans)", len(recs), len(want))
	}
	for i, r := range recs {
		if r.Reason != want[i] {
			t.Errorf("scan %d: %s (%s), want %s", i, r.Reason, r.Detail, want[i])
		}
		if (r.Verdict == "admit") != (want[i] == "ok") {
			t.Errorf("scan %d: verdict %s for reason %s", i, r.Verdict, r.Reason)
		}
		if r.Seq != uint64(i+1) || r.Gate != "north-1" || r.At.IsZero() || r.ID == "" {
			t.Errorf("scan %d: seq %d gate %q at %v id %q", i, r.Seq, r.Gate, r.At, r.ID)
		}
	}
	again := recs[5]
	if again.FirstUsedGate != "north-1" || !again.FirstUsedAt.Equal(recs[0].At) || again.Ticket != recs[0].Ticket ||
		!strings.Contains(again.Detail, "north-1") {
		t.Errorf("already used does not say when and where: %+v", again)
	}
	// The journal holds exactly what was printed.
	journal := records(t, must(t, runBin(t, nil, "gated", "journal", "--data", s.gate)))
	if len(journal) != len(recs) {
		t.Fatalf("journal has %d records, run printed %d", len(journal), len(recs))
	}
	for i := range recs {
		if journal[i].ID != recs[i].ID || journal[i].Reason != recs[i].Reason || journal[i].Ticket != recs[i].Ticket {
			t.Errorf("journal %d = %+v, printed %+v", i, journal[i], recs[i])
		}
	}
	// A second run on the same store still knows every ticket is used.
	for _, r := range s.scan(valid) {
		if r.Reason != "already_used" {
			t.Errorf("after restart: %s", r.Reason)
		}
	}
}

func TestStrictMode(t *testing.T) {
	s := newSite(t)
	s.issue("--event", "expo", "--count", "1")
	s.provision("expo")
	late := s.issue("--event", "expo", "--count", "1")[0] // sold after the gate's bundle
	if r := s.scan([]string{late}, "--strict"); r[0].Reason != "not_in_whitelist" {
		t.Fatalf("strict: %s", r[0].Reason)
	}
	if r := s.scan([]string{late}); r[0].Reason != "ok" {
		t.Fatalf("non-strict: %s", r[0].Reason)
	}
}

// rotatingIDs lists the tickets of the centre's phone simulator in issue order.
func rotatingIDs(t testing.TB, s *site) []string {
	ents, err := os.ReadDir(filepath.Join(s.centre, "devices"))
	if err != nil {
		t.Fatal(err)
	}
	type kv struct {
		id string
		at time.Time
	}
	var all []kv
	for _, e := range ents {
		info, _ := e.Info()
		all = append(all, kv{strings.TrimSuffix(e.Name(), ".key"), info.ModTime()})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].at.Before(all[j].at) })
	var ids []string
	for _, a := range all {
		ids = append(ids, a.id)
	}
	return ids
}

func TestRotatingCodes(t *testing.T) {
	s := newSite(t)
	s.issue("--event", "expo", "--count", "1", "--rotating")
	time.Sleep(20 * time.Millisecond) // distinct mtimes for rotatingIDs
	s.issue("--event", "expo", "--count", "1", "--rotating", "--reentry")
	time.Sleep(20 * time.Millisecond)
	s.issue("--event", "expo", "--count", "1", "--rotating")
	s.provision("expo")
	ids := rotatingIDs(t, s)
	// One base time for every code: --at has whole seconds, so codes taken
	// from the clock at each call moved a second apart when a second
	// boundary fell between two calls ("the same code again" became newer:
	// reentry instead of replayed_code).
	base := time.Now().UTC().Truncate(time.Second)
	present := func(id string, offset time.Duration, short bool) string {
		args := []string{"present", "--dir", s.centre, "--ticket", id, "--at", base.Add(offset).Format(time.RFC3339)}
		if short {
			args = append(args, "--short")
		}
		return nonEmptyLines(must(t, runBin(t, nil, "gatesync", args...)))[0]
	}
	one, reentry, third := ids[0], ids[1], ids[2]
	scans := []string{
		present(one, -2*time.Minute, false),     // stale
		present(one, 2*time.Minute, false),      // from the future beyond the skew allowance
		present(one, -3*time.Second, false),     // fresh: admitted
		present(one, -1*time.Second, false),     // fresh, but the ticket is used
		present(reentry, -5*time.Second, false), // admitted
		present(reentry, -8*time.Second, false), // older than the last seen: replayed
		present(reentry, -2*time.Second, true),  // newer, short form: re-entry
		present(reentry, -2*time.Second, true),  // the same code again: replayed
		present(third, 0, true),                 // short form, first use
	}
	recs := s.scan(scans)
	want := []string{"stale_code", "stale_code", "ok", "already_used", "ok", "replayed_code", "reentry", "replayed_code", "ok"}
	if len(recs) != len(want) {
		t.Fatalf("%d decisions, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		if r.Reason != want[i] {
			t.Errorf("scan %d: %s (%s), want %s", i, r.Reason, r.Detail, want[i])
		}
	}
	// A wider window set by flag admits what the default calls stale.
	if r := s.scan([]string{present(third, -50*time.Second, false)}, "--max-code-age", "2m"); r[0].Reason != "already_used" {
		t.Errorf("wide window: %s (%s)", r[0].Reason, r[0].Detail)
	}
}

func TestProvisionRefusals(t *testing.T) {
	s := newSite(t)
	s.issue("--event", "expo", "--count", "2")
	old := s.export("expo")
	s.issue("--event", "expo", "--count", "1")
	s.provision("expo")

	r := runBin(t, nil, "gated", "provision", "--data", s.gate, old)
	if r.code != 1 || !strings.Contains(r.stderr, "older than the one loaded") {
		t.Errorf("older bundle: exit %d %s", r.code, r.stderr)
	}
	other := newSite(t)
	other.issue("--event", "expo", "--count", "1")
	b := other.export("expo")
	r = runBin(t, nil, "gated", "provision", "--data", s.gate, b)
	if r.code != 1 || !strings.Contains(r.stderr, "another root key") {
		t.Errorf("other root: exit %d %s", r.code, r.stderr)
	}
	tampered, _ := os.ReadFile(b)
	os.WriteFile(b, bytes.Replace(tampered, []byte(`"payload":"ey`), []byte(`"payload":"ez`), 1), 0o644)
	r = runBin(t, nil, "gated", "provision", "--data", other.gate, b)
	if r.code != 1 || !strings.Contains(r.stderr, "refused") {
		t.Errorf("tampered bundle: exit %d %s", r.code, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	s := newSite(t)
	s.issue("--event", "expo", "--count", "1")
	s.provision("expo")
	cfg := filepath.Join(t.TempDir(), "gated.yaml")
	for _, tc := range []struct {
		name   string
		config string
		args   []string
		want   string
	}{
		{"unknown flag", "", []string{"run", "--data", s.gate, "--gate", "g", "--bogus"}, "bogus"},
		{"no gate", "", []string{"run", "--data", s.gate}, "--gate"},
		{"bad output", "", []string{"run", "--data", s.gate, "--gate", "g", "--output", "xml"}, "console or json"},
		{"bad scanner", "", []string{"run", "--data", s.gate, "--gate", "g", "--scanner", "carrier-pigeon:"}, "carrier-pigeon"},
		{"misspelt config key", "gate: g\ndata: " + s.gate + "\nstrikt: true\n", []string{"run", "--config", cfg}, "strikt"},
		{"bad config value", "gate: g\ndata: " + s.gate + "\nmax_code_age: forever\n", []string{"run", "--config", cfg}, "forever"},
		{"missing config", "", []string{"run", "--config", "/nonexistent/gated.yaml"}, "nonexistent"},
		{"unknown command", "", []string{"fly"}, "unknown command"},
		{"provision without file", "", []string{"provision", "--data", s.gate}, "bundle file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.config != "" {
				os.WriteFile(cfg, []byte(tc.config), 0o644)
			}
			r := runBin(t, strings.NewReader(""), "gated", tc.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 mentioning %q", r.code, r.stderr, tc.want)
			}
		})
	}
	// A config file holds the settings; flags override it.
	os.WriteFile(cfg, []byte("gate: from-config\ndata: "+s.gate+"\noutput: console\nscanners: [\"stdin:\"]\n"), 0o644)
	r := runBin(t, strings.NewReader("x\n"), "gated", "run", "--config", cfg, "--output", "json")
	if recs := records(t, must(t, r)); len(recs) != 1 || recs[0].Gate != "from-config" {
		t.Fatalf("config + flag override: %+v", recs)
	}
	r = runBin(t, strings.NewReader("x\n"), "gated", "run", "--config", cfg)
	if !strings.Contains(must(t, r), "DENY") {
		t.Fatalf("console output: %q", r.stdout)
	}
	r = runBin(t, nil, "gated", "run", "--data", filepath.Join(t.TempDir(), "empty"), "--gate", "g")
	if r.code != 1 || !strings.Contains(r.stderr, "gated provision") {
		t.Fatalf("unprovisioned gate: exit %d %q", r.code, r.stderr)
	}
}

func TestSIGTERM(t *testing.T) {
	s := newSite(t)
	s.issue("--event", "expo", "--count", "1")
	s.provision("expo")
	cmd := exec.Command(bin("gated"), "run", "--data", s.gate, "--gate", "g", "--output", "json")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	fmt.Fprintln(stdin, "not a ticket")
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() {
		t.Fatal("no decision printed")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
}

// SIGKILL at random moments loses no decision that was printed: every
// printed decision is in the journal with the same verdict, and no ticket
// is admitted twice across the restarts.
func TestSIGKILLLosesNothingPrinted(t *testing.T) {
	s := newSite(t)
	tickets := s.issue("--event", "expo", "--count", "400")
	s.provision("expo")
	printed := map[string]record{}
	admitted := map[string]bool{}
	next := 0
	for round := 0; round < 5 && next < len(tickets); round++ {
		cmd := exec.Command(bin("gated"), "run", "--data", s.gate, "--gate", "g", "--output", "json")
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func(start int) {
			// Each new ticket, then a rescan of an earlier one.
			for i := start; i < len(tickets); i++ {
				if _, err := fmt.Fprintf(stdin, "%s\n%s\n", tickets[i], tickets[rand.IntN(i+1)]); err != nil {
					return
				}
			}
			stdin.Close()
		}(next)
		killAt := 20 + rand.IntN(120)
		sc := bufio.NewScanner(stdout)
		n := 0
		for sc.Scan() {
			var r record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			printed[r.ID] = r
			if r.Verdict == "admit" {
				if admitted[r.Ticket] {
					t.Fatalf("ticket %s admitted twice", r.Ticket)
				}
				admitted[r.Ticket] = true
			}
			n++
			if n == killAt {
				cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		cmd.Wait()
		next += n / 2
	}
	journal := records(t, must(t, runBin(t, nil, "gated", "journal", "--data", s.gate)))
	inJournal := map[string]record{}
	for _, r := range journal {
		inJournal[r.ID] = r
	}
	for id, p := range printed {
		j, ok := inJournal[id]
		if !ok {
			t.Fatalf("printed decision %s (%s %s) is not in the journal", id, p.Verdict, p.Ticket)
		}
		if j.Verdict != p.Verdict || j.Reason != p.Reason || j.Ticket != p.Ticket {
			t.Fatalf("journal %+v differs from printed %+v", j, p)
		}
	}
	if len(printed) < 100 {
		t.Fatalf("only %d decisions printed", len(printed))
	}
	t.Logf("%d decisions printed across kills, %d in the journal", len(printed), len(journal))
}

// Key rollover: tickets of the old and the new issuer key are both admitted
// while both are live; once the old key is retired its tickets are refused.
func TestKeyRollover(t *testing.T) {
	s := newSite(t)
	old := s.issue("--event", "expo", "--count", "2")
	must(t, runBin(t, nil, "gatesync", "rotate-key", "--dir", s.centre))
	fresh := s.issue("--event", "expo", "--count", "1")
	s.provision("expo")
	for i, r := range s.scan([]string{old[0], fresh[0]}) {
		if r.Reason != "ok" {
			t.Errorf("scan %d during rollover: %s (%s)", i, r.Reason, r.Detail)
		}
	}
	retired := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	must(t, runBin(t, nil, "gatesync", "rotate-key", "--dir", s.centre, "--retire-old", retired))
	s.provision("expo")
	if r := s.scan([]string{old[1]}); r[0].Reason != "unknown_key" {
		t.Errorf("ticket of a retired key: %s (%s)", r[0].Reason, r[0].Detail)
	}
}
