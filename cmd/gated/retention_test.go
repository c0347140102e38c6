package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/cache"
)

// TestRetention runs the whole path: decisions, the centre's ack (made on
// the store directly: no broker here), a gated run two days later with
// journal_retention 1d that archives them at start, gated journal with and
// without --archive, and gated compact, which refuses while gated runs.
func TestRetention(t *testing.T) {
	s := newSite(t)
	codes := s.issue("--event", "expo", "--count", "3")
	s.provision("expo")
	decided := s.scan(append(codes, codes[0]))
	st, err := cache.Open(s.gate, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Acknowledge(1, 3); err != nil { // the 4th is not at the centre yet
		t.Fatal(err)
	}
	st.Close()

	cfg := filepath.Join(t.TempDir(), "gated.yaml")
	os.WriteFile(cfg, []byte("data: "+s.gate+"\ngate: north-1\noutput: json\njournal_retention: 1d\n"), 0o600)
	later := func() time.Time { return time.Now().Add(49 * time.Hour) }
	var out, errb bytes.Buffer
	if code := run([]string{"run", "--config", cfg}, stdio{strings.NewReader(""), &out, &errb}, later); code != 0 {
		t.Fatalf("gated run: exit %d\n%s", code, errb.String())
	}
	if !containsAll(errb.String(), `msg="old decisions archived"`, "records=3 first_seq=1 last_seq=3") {
		t.Errorf("no archive logged:\n%s", errb.String())
	}
	files, _ := filepath.Glob(filepath.Join(s.gate, "archive", "journal-*.jsonl.gz"))
	if len(files) == 0 {
		t.Fatal("no archive file")
	}
	live := records(t, must(t, runBin(t, nil, "gated", "journal", "--data", s.gate)))
	if len(live) != 1 || live[0].Seq != 4 {
		t.Fatalf("live journal after archiving: %+v, want only seq 4 (not acked)", live)
	}
	all := records(t, must(t, runBin(t, nil, "gated", "journal", "--data", s.gate, "--archive")))
	if len(all) != len(decided) {
		t.Fatalf("journal --archive printed %d records, want %d", len(all), len(decided))
	}
	for i, r := range all {
		if r.Seq != decided[i].Seq || r.ID != decided[i].ID || r.Verdict != decided[i].Verdict {
			t.Errorf("record %d: %+v, decided %+v", i, r, decided[i])
		}
	}

	g := startLive(t, s, nil, "--scanner", "stdin:")
	g.waitStderr(regexp.MustCompile(`gate running`))
	r := runBin(t, nil, "gated", "compact", "--data", s.gate)
	g.stop()
	if r.code != 1 || !strings.Contains(r.stderr, "stop gated") {
		t.Fatalf("compact while gated runs: exit %d, %s", r.code, r.stderr)
	}
	if out := must(t, runBin(t, nil, "gated", "compact", "--data", s.gate)); !strings.Contains(out, "compacted") {
		t.Fatalf("compact: %s", out)
	}
	if again := records(t, must(t, runBin(t, nil, "gated", "journal", "--data", s.gate, "--archive"))); len(again) != len(decided) {
		t.Fatalf("after compact: %d records", len(again))
	}
}
