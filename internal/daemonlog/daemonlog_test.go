package daemonlog

import (
	"bytes"
	"fmt"
	"github.com/gated-dev/gated/internal/lockedbuf"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFormats(t *testing.T) {
	yes, no := true, false
	for _, tc := range []struct {
		name     string
		journal  *bool
		level    slog.Level
		log      func(l *slog.Logger)
		want     []string
		wantNone []string
	}{
		{"terminal keeps time", &no, slog.LevelInfo, func(l *slog.Logger) { l.Info("gate running", "gate", "n1") },
			[]string{"time=", `level=INFO msg="gate running" gate=n1`}, []string{"<6>"}},
		{"journal drops time, adds priority", &yes, slog.LevelInfo, func(l *slog.Logger) {
			l.With("component", "cache").Error("disk full", "err", "ENOSPC")
		}, []string{`<3>level=ERROR msg="disk full" component=cache err=ENOSPC`}, []string{"time="}},
		{"warn is 4", &yes, slog.LevelInfo, func(l *slog.Logger) { l.Warn("w") }, []string{"<4>level=WARN"}, nil},
		{"debug hidden at info", &yes, slog.LevelInfo, func(l *slog.Logger) { l.Debug("d") }, nil, []string{"msg=d"}},
		{"debug is 7", &yes, slog.LevelDebug, func(l *slog.Logger) { l.WithGroup("g").Debug("d", "k", 1) },
			[]string{"<7>level=DEBUG msg=d g.k=1"}, nil},
		{"a key scoped again is replaced", &no, slog.LevelInfo, func(l *slog.Logger) {
			l.With("component", "gated", "gate", "g1").With("component", "clock").Info("step")
		}, []string{`msg=step component=clock gate=g1`}, []string{"component=gated"}},
		{"in the journal too", &yes, slog.LevelInfo, func(l *slog.Logger) {
			l.With("component", "gated", "gate", "g1").With("component", "clock", "n", 2).Info("step")
		}, []string{`<6>level=INFO msg=step component=clock gate=g1 n=2`}, []string{"component=gated"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			tc.log(New(&b, Options{Level: tc.level, Journal: tc.journal}))
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("got %q, want %q in it", b.String(), w)
				}
			}
			for _, w := range tc.wantNone {
				if strings.Contains(b.String(), w) {
					t.Errorf("got %q, want no %q", b.String(), w)
				}
			}
		})
	}
}

// Every line carries its own prefix even when goroutines log at once.
func TestPrefixPerLineConcurrently(t *testing.T) {
	yes := true
	var b lockedbuf.Buffer
	l := New(&b, Options{Journal: &yes})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				if i%2 == 0 {
					l.Error("e")
				} else {
					l.Info("i")
				}
			}
		})
	}
	wg.Wait()
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if !(strings.HasPrefix(line, "<3>level=ERROR") || strings.HasPrefix(line, "<6>level=INFO")) {
			t.Fatalf("line %q", line)
		}
	}
}

func TestIsJournal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	same := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	other := fmt.Sprintf("%d:%d", st.Dev, st.Ino+1)
	for _, tc := range []struct {
		env  string
		want bool
	}{{same, true}, {other, false}, {"", false}, {"garbage", false}} {
		if got := IsJournal(f, tc.env); got != tc.want {
			t.Errorf("IsJournal(%q) = %v, want %v", tc.env, got, tc.want)
		}
	}
}
