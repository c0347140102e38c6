package console

import (
	"flag"
	"github.com/gated-dev/gated/internal/lockedbuf"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/gate/ops"
	"github.com/gated-dev/gated/verify"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func init() { time.Local = time.UTC } // the recent list prints local times; goldens are in UTC

var now = time.Date(2026, 6, 1, 18, 30, 0, 0, time.UTC)

func status(online *bool, scanners ...ops.ScannerStatus) ops.Status {
	return ops.Status{Gate: "north-1", Event: "expo", Now: now, Started: now.Add(-2 * time.Hour),
		Ready: true, Admitted: 412, Denied: 9, Outbox: 3, SyncLag: ops.Seconds(95 * time.Second),
		Online: online, LastSync: now.Add(-12 * time.Second), Scanners: scanners,
		Recent: []cache.Decision{
			{Seq: 420, At: now.Add(-20 * time.Second), Verdict: cache.Admit, Reason: verify.ReasonOK, Ticket: "t420", Zone: "GA"},
			{Seq: 421, At: now.Add(-2 * time.Second), Verdict: cache.Deny, Reason: verify.ReasonAlreadyUsed, Ticket: "t7",
				FirstUsedAt: now.Add(-time.Hour), FirstUsedGate: "south-2"},
		}}
}

func TestLayoutGolden(t *testing.T) {
	on, off := true, false
	up := ops.ScannerStatus{Name: "serial:/dev/ttyACM0", Up: true, State: "up"}
	down := ops.ScannerStatus{Name: "hid:05e0:1200", State: "not connected"}
	admit := &cache.Decision{Seq: 422, At: now.Add(-time.Second), Verdict: cache.Admit, Reason: verify.ReasonOK, Zone: "VIP", Holder: "Li Wei"}
	deny := &cache.Decision{Seq: 421, At: now.Add(-2 * time.Second), Verdict: cache.Deny, Reason: verify.ReasonAlreadyUsed,
		FirstUsedAt: now.Add(-time.Hour), FirstUsedGate: "south-2"}
	for _, tc := range []struct {
		name       string
		v          View
		cols, rows int
		style      string // the banner's style
	}{
		{"admit-120x40", View{Status: status(&on, up), Last: admit, Hold: 4 * time.Second}, 120, 40, styleAdmit},
		{"deny-120x40", View{Status: status(&on, up), Last: deny, Hold: 4 * time.Second}, 120, 40, styleDeny},
		{"ready-after-hold-120x40", View{Status: status(&on, up), Last: deny, Hold: time.Second}, 120, 40, styleIdle},
		{"offline-scanner-down-80x24", View{Status: status(&off, up, down), Last: admit, Hold: 4 * time.Second,
			Logs: []string{`level=WARN msg="scanner not available; retrying"`}}, 80, 24, styleAdmit},
		{"clock-distrusted-80x24", View{Status: withClock(status(&on, up), ops.ClockStatus{Source: "centre", OffsetMs: -8 * 3600 * 1000}),
			Last: admit, Hold: 4 * time.Second}, 80, 24, styleAdmit},
		{"standalone-small-40x12", View{Status: status(nil, up), Last: deny, Hold: 4 * time.Second}, 40, 12, styleDeny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.v.Loc = time.UTC
			rows := Layout(tc.v, tc.cols, tc.rows)
			if len(rows) != tc.rows {
				t.Fatalf("%d rows, want %d", len(rows), tc.rows)
			}
			if rows[2].Style != tc.style && rows[len(rows)/4].Style != tc.style {
				t.Errorf("banner style %q/%q, want %q", rows[2].Style, rows[len(rows)/4].Style, tc.style)
			}
			got := Plain(rows)
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				os.WriteFile(path, []byte(got), 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./console -update)", err)
			}
			if got != string(want) {
				t.Errorf("frame differs from %s:\n%s", path, got)
			}
		})
	}
}

// A scanned code can carry escape sequences; they never reach the terminal.
func TestPaintCleansControlCharacters(t *testing.T) {
	out := Paint([]Row{{Text: "ticket \x1b[2J\x07evil"}}, 40)
	if strings.Contains(out, "\x1b[2J") || strings.Contains(out, "\x07") {
		t.Fatalf("control characters passed through: %q", out)
	}
}

type fixed struct{ st ops.Status }

func (f fixed) Status() ops.Status { return f.st }

func TestScreenConcurrentSignals(t *testing.T) {
	var out lockedbuf.Buffer
	s := New(&out, fixed{status(nil)}, Options{Size: func() (int, int) { return 80, 24 }})
	s.active = true
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 20 {
				s.Signal(cache.Decision{Seq: uint64(i), Verdict: cache.Admit, Reason: verify.ReasonOK, At: time.Now()})
				s.LogWriter().Write([]byte("a log line\n"))
			}
		})
	}
	wg.Wait()
	if !strings.Contains(out.String(), "ADMIT: valid ticket") {
		t.Fatal("no ADMIT frame drawn")
	}
}

func withClock(st ops.Status, c ops.ClockStatus) ops.Status {
	st.Clock = &c
	return st
}

// A row with Chinese characters is cut and padded by terminal columns, so
// it never wraps onto the next row or scrolls the screen.
func TestFitCountsWideCharacters(t *testing.T) {
	for _, tc := range []struct {
		in   string
		cols int
		want string
	}{
		{"时钟不可信 CLOCK", 10, "时钟不可信"},
		{"时钟不可信 CLOCK", 9, "时钟不可 "},
		{"时钟", 6, "时钟  "},
		{"abc", 2, "ab"},
	} {
		if got := fit(tc.in, tc.cols); got != tc.want || cells(got) != tc.cols {
			t.Errorf("fit(%q, %d) = %q (%d cells), want %q", tc.in, tc.cols, got, cells(got), tc.want)
		}
	}
}
