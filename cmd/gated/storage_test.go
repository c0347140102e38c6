package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/internal/testreq"
)

// crashed reports whether a command died of a panic or a fault rather
// than exiting with an error.
func crashed(r result) bool {
	for _, s := range []string{"panic:", "goroutine ", "fatal error", "unexpected fault address", "SIGSEGV", "SIGBUS"} {
		if strings.Contains(r.stderr, s) {
			return true
		}
	}
	return false
}

// damagedSite is a provisioned gate with some decisions, and its store
// file's bytes.
func damagedSite(t *testing.T) (*site, []string, []byte) {
	s := newSite(t)
	codes := s.issue("--event", "expo", "--count", "30")
	s.provision("expo")
	s.scan(codes)
	pristine, err := os.ReadFile(filepath.Join(s.gate, cache.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return s, codes, pristine
}

// Every gated command on a store with one damaged page, on each page in
// turn, and on truncated and empty files: none panics, and each exits 0
// (the damage was in a page it did not need), 3 (the store is damaged),
// or, for doctor only, 1 (another check failed).
func TestDamagedStoreNeverPanics(t *testing.T) {
	_, codes, pristine := damagedSite(t)
	const page = 4096
	type variant struct {
		name string
		data []byte
	}
	var variants []variant
	rng := rand.New(rand.NewPCG(1, 2))
	for p := 0; p*page < len(pristine); p++ {
		b := bytes.Clone(pristine)
		for i := p * page; i < (p+1)*page && i < len(b); i++ {
			b[i] = byte(rng.Uint32())
		}
		variants = append(variants, variant{fmt.Sprintf("page %d", p), b})
	}
	for _, n := range []int{0, 100, page, 2 * page, 3 * page, len(pristine) / 2, len(pristine) - page} {
		variants = append(variants, variant{fmt.Sprintf("cut to %d bytes", n), bytes.Clone(pristine[:n])})
	}
	commands := map[string][]string{
		"status":  {"status", "--data", "DIR"},
		"journal": {"journal", "--data", "DIR"},
		"doctor":  {"doctor", "--data", "DIR", "--gate", "g9", "--scanner", "stdin:"},
		"run":     {"run", "--data", "DIR", "--gate", "g9", "--scanner", "stdin:", "--output", "json"},
	}
	exits := map[string]map[int]int{}
	for _, v := range variants {
		dir := filepath.Join(t.TempDir(), "gate")
		os.MkdirAll(dir, 0o700)
		path := filepath.Join(dir, cache.FileName)
		if err := os.WriteFile(path, v.data, 0o600); err != nil {
			t.Fatal(err)
		}
		for name, args := range commands {
			args = append([]string(nil), args...)
			for i := range args {
				if args[i] == "DIR" {
					args[i] = dir
				}
			}
			r := runBin(t, strings.NewReader(codes[0]+"\n"), "gated", args...)
			if exits[name] == nil {
				exits[name] = map[int]int{}
			}
			exits[name][r.code]++
			switch {
			case crashed(r):
				t.Errorf("%s: gated %s crashed (exit %d):\n%.600s", v.name, name, r.code, r.stderr)
			case r.code == 3 && !strings.Contains(r.stderr+r.stdout, "gated salvage"):
				t.Errorf("%s: gated %s exit 3 without saying what to do: %s", v.name, name, r.stderr)
			case r.code != 0 && r.code != 3 && !(name == "doctor" && r.code == 1):
				t.Errorf("%s: gated %s exit %d, want 0 or 3:\n%s%s", v.name, name, r.code, r.stdout, r.stderr)
			}
		}
		if len(v.data) == 0 {
			if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
				t.Errorf("an empty store file was replaced (%v)", err)
			}
		}
	}
	for name, byCode := range exits {
		var cs []string
		for c, n := range byCode {
			cs = append(cs, fmt.Sprintf("exit %d: %d", c, n))
		}
		sort.Strings(cs)
		t.Logf("gated %-7s over %d damaged stores: %s", name, len(variants), strings.Join(cs, ", "))
	}
}

// No command but provision creates a store: status on an empty data
// directory says to provision, and leaves no file behind.
func TestOnlyProvisionCreatesAStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gate")
	for _, args := range [][]string{
		{"status", "--data", dir},
		{"journal", "--data", dir},
		{"run", "--data", dir, "--gate", "g1", "--scanner", "stdin:"},
	} {
		r := runBin(t, strings.NewReader(""), "gated", args...)
		if r.code == 0 || !strings.Contains(r.stderr, "gated provision") {
			t.Errorf("gated %s on no store: exit %d, %s", args[0], r.code, r.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, cache.FileName)); !os.IsNotExist(err) {
		t.Fatalf("a store was created: %v", err)
	}
}

// Salvage of a store with a damaged page, then import into a fresh one:
// the journal and uses come back, and the old tickets stay used.
func TestSalvageAndImport(t *testing.T) {
	s, codes, _ := damagedSite(t)
	var before []map[string]any
	for _, l := range nonEmptyLines(must(t, runBin(t, nil, "gated", "journal", "--data", s.gate))) {
		var m map[string]any
		json.Unmarshal([]byte(l), &m)
		before = append(before, m)
	}
	damageRoot(t, filepath.Join(s.gate, cache.FileName))
	if r := runBin(t, nil, "gated", "status", "--data", s.gate); r.code != 3 {
		t.Fatalf("status of the damaged store: exit %d %s", r.code, r.stderr)
	}
	out := filepath.Join(t.TempDir(), "salvage.jsonl")
	r := must(t, runBin(t, nil, "gated", "salvage", "--data", s.gate, "--out", out))
	t.Log(r)
	fresh := filepath.Join(t.TempDir(), "fresh")
	must(t, runBin(t, nil, "gated", "provision", "--data", fresh, s.export("expo")))
	t.Log(must(t, runBin(t, nil, "gated", "salvage", "--import", out, "--data", fresh)))
	after := nonEmptyLines(must(t, runBin(t, nil, "gated", "journal", "--data", fresh)))
	if len(after) != len(before) {
		t.Fatalf("journal after salvage and import: %d records, want %d", len(after), len(before))
	}
	for i, l := range after {
		var m map[string]any
		json.Unmarshal([]byte(l), &m)
		if m["id"] != before[i]["id"] || m["verdict"] != before[i]["verdict"] {
			t.Fatalf("record %d: %v, want %v", i, m, before[i])
		}
	}
	in := strings.NewReader(codes[0] + "\n")
	recs := records(t, must(t, runBin(t, in, "gated", "run", "--data", fresh, "--gate", "north-1", "--scanner", "stdin:", "--output", "json")))
	if len(recs) != 1 || recs[0].Reason != "already_used" {
		t.Fatalf("a ticket used before the damage, scanned at the fresh store: %+v", recs)
	}
}

// A gate on a real full disk (a small tmpfs, mounted here as root): the
// first commit that finds no space frees the store's reserve, so the
// decisions go on being recorded, and the gate says it is unhealthy
// (/healthz 503, /status storage not ok) instead of answering "ok". The
// errors repeated per scan are logged a bounded number of times.
func TestFullDiskIsLoud(t *testing.T) {
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=12m"); err != nil {
		testreq.Skipf(t, "cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	s := newSite(t)
	s.gate = filepath.Join(mnt, "gate")
	codes := s.issue("--event", "expo", "--count", "40")
	s.provision("expo")
	if fi, err := os.Stat(filepath.Join(s.gate, cache.ReserveName)); err != nil || fi.Size() != 8<<20 {
		t.Fatalf("space reserve: %v", err)
	}
	g := startLive(t, s, nil, "--output", "json", "--http", "127.0.0.1:0")
	base := "http://" + g.waitStderr(httpAddrRE)
	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz before the disk filled: %d %s", code, body)
	}
	// Fill the disk.
	f, err := os.Create(filepath.Join(mnt, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<16)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	var stored, failed int
	for round := 0; round < 10; round++ {
		for _, l := range g.scan(codes...) {
			switch {
			case strings.Contains(l, `"storage_failure"`):
				failed++
			default:
				stored++
			}
		}
	}
	code, body := get(t, base+"/healthz")
	t.Logf("%d scans on a full disk: %d recorded, %d storage_failure; /healthz %d %s", stored+failed, stored, failed, code, strings.TrimSpace(body))
	if code != 503 || !strings.Contains(body, "storage fault") {
		t.Fatalf("/healthz on a full disk: %d %q, want 503 storage fault", code, body)
	}
	var st struct {
		Ready   bool `json:"ready"`
		Storage *struct {
			OK    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"storage"`
	}
	_, raw := get(t, base+"/status")
	if err := json.Unmarshal([]byte(raw), &st); err != nil || st.Ready || st.Storage == nil || st.Storage.OK || st.Storage.Error == "" {
		t.Fatalf("/status on a full disk: %s", raw)
	}
	if _, err := os.Stat(filepath.Join(s.gate, cache.ReserveName)); !os.IsNotExist(err) {
		t.Fatalf("the space reserve was not released: %v", err)
	}
	if failed > 0 {
		t.Fatalf("%d scans failed although the reserve freed room for them", failed)
	}
	// Full again, with no reserve left: every scan is a storage_failure,
	// and its errors are logged a bounded number of times.
	f, err = os.Create(filepath.Join(mnt, "filler2"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	errorsBefore := strings.Count(g.stderr(), "level=ERROR")
	failed = 0
	for round := 0; round < 10; round++ {
		for _, l := range g.scan(codes...) {
			if strings.Contains(l, `"storage_failure"`) {
				failed++
			}
		}
	}
	if failed < 300 {
		t.Fatalf("only %d of 400 scans on a disk full for good were storage_failure", failed)
	}
	if n := strings.Count(g.stderr(), "level=ERROR") - errorsBefore; n > 10 {
		t.Fatalf("%d ERROR lines for %d failed scans: repeated errors are not rate limited:\n%.2000s", n, failed, g.stderr())
	}
	if code, body := get(t, base+"/healthz"); code != 503 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
}

// damageRoot overwrites the page holding the store's buckets (named by the
// newer of the two meta pages): none of them can be reached through bbolt.
func damageRoot(t testing.TB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	meta := func(p int) (root, txid uint64) {
		m := b[p*4096+16:]
		return binary.LittleEndian.Uint64(m[16:]), binary.LittleEndian.Uint64(m[48:])
	}
	root, tx0 := meta(0)
	if r1, tx1 := meta(1); tx1 > tx0 {
		root = r1
	}
	for i := int(root) * 4096; i < int(root+1)*4096; i++ {
		b[i] = 0xff
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A gate's store is damaged with decisions the centre has and some it has
// not: salvage, provision fresh, import, and the centre ends up with every
// decision exactly once, through the real gatesync serve and its broker.
func TestSalvagedOutboxReachesTheCentreOnce(t *testing.T) {
	v := newVenue(t, 40, "g1")
	v.startServe("")
	g1 := v.startGate("g1", "")
	g1.scan(v.codes[:20]...)
	g1.waitDecisions(20, time.Minute)
	waitFor(t, time.Minute, "the centre holds the first 20", func() bool { return len(v.entries()) == 20 })
	v.serve.stop()
	g1.scan(v.codes[20:]...)
	want := map[string]bool{}
	for _, r := range g1.waitDecisions(40, time.Minute) {
		want[r.ID] = true
	}
	g1.stop()
	damageRoot(t, filepath.Join(v.data("g1"), cache.FileName))
	if r := runBin(t, nil, "gated", "status", "--data", v.data("g1")); r.code != 3 {
		t.Fatalf("status of the damaged store: exit %d %s", r.code, r.stderr)
	}
	out := filepath.Join(t.TempDir(), "salvage.jsonl")
	t.Log(must(t, runBin(t, nil, "gated", "salvage", "--data", v.data("g1"), "--out", out)))
	if err := os.Rename(v.data("g1"), v.data("g1")+".damaged"); err != nil {
		t.Fatal(err)
	}
	must(t, runBin(t, nil, "gated", "provision", "--data", v.data("g1"), v.bundle))
	t.Log(must(t, runBin(t, nil, "gated", "salvage", "--import", out, "--data", v.data("g1"))))
	v.startServe("")
	g1 = v.startGate("g1", "")
	waitFor(t, time.Minute, "the centre holds all 40", func() bool { return len(v.entries()) >= 40 })
	time.Sleep(time.Second) // a duplicate still in flight lands now
	checkExactlyOnce(t, v.entries(), want)
	if cs := v.conflicts(); len(cs) != 0 {
		t.Errorf("conflicts: %+v", cs)
	}
	// The tickets used before the damage stay used at the fresh store.
	g1.scan(v.codes[0])
	if r := g1.waitDecisions(1, 30*time.Second); r[0].Reason != "already_used" {
		t.Fatalf("a ticket admitted before the damage: %+v", r[0])
	}
}
