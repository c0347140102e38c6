package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Under systemd, stderr is the journal's stream and JOURNAL_STREAM names
// it: gated then leaves out time= (journald stamps lines) and prefixes
// each line with its syslog priority. Elsewhere lines keep their time.
func TestJournalLogFormat(t *testing.T) {
	s := newSite(t)
	code := s.issue("--event", "expo", "--count", "1")[0]
	s.provision("expo")
	for _, journal := range []bool{true, false} {
		t.Run(fmt.Sprint("journal=", journal), func(t *testing.T) {
			f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var st syscall.Stat_t
			if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin("gated"), "run", "--data", s.gate, "--gate", "north-1", "--scanner", "stdin:",
				"--scanner", "serial:/dev/ttyGATEDTEST9?model=honeywell-voyager-1470g")
			cmd.Stdin = strings.NewReader(code + "\n")
			cmd.Stderr = f // the same open file, so the same device and inode
			cmd.Env = os.Environ()
			if journal {
				cmd.Env = append(cmd.Env, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
			}
			// The serial source keeps retrying after stdin ends; SIGTERM ends it.
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitFile(t, f.Name(), `msg="scanner not available; retrying"`)
			cmd.Process.Signal(syscall.SIGTERM)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("gated: %v", err)
			}
			b, _ := os.ReadFile(f.Name())
			lines := nonEmptyLines(string(b))
			for _, l := range lines {
				hasTime := strings.Contains(l, "time=")
				if journal && (hasTime || !(strings.HasPrefix(l, "<6>level=INFO") || strings.HasPrefix(l, "<4>level=WARN"))) {
					t.Errorf("journal line %q", l)
				}
				if !journal && (!hasTime || strings.HasPrefix(l, "<")) {
					t.Errorf("terminal line %q", l)
				}
			}
			if journal && !strings.Contains(string(b), `<4>level=WARN msg="scanner not available; retrying"`) {
				t.Errorf("no warning with priority 4:\n%s", b)
			}
		})
	}
}

func waitFile(t *testing.T, path, want string) {
	t.Helper()
	for range 600 {
		if b, _ := os.ReadFile(path); strings.Contains(string(b), want) {
			return
		}
		sleepBriefly()
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("%s never held %q:\n%s", path, want, b)
}
