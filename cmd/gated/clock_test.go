package main

// The decision clock through the real binary: the wall clock is stepped
// with GATED_TEST_CLOCK_FILE (libfaketime does not move Go's clock) while
// valid tickets are scanned, then corrected, and the wrong denials are
// counted.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gated-dev/gated/internal/mqtttest"
)

// clockPhase is a span of the test: the clock file's content, and how
// many tickets are scanned under it.
type clockPhase struct {
	name  string
	clock string
	scans int
	// denialsAllowed are wrong denials accepted in this phase: NTP
	// vouching for a wrong step is believed, by design, until it is
	// corrected.
	denialsAllowed int
	source         string // /status clock.source expected at the end of the phase
}

func TestClockJumpCorrected(t *testing.T) {
	// The tickets are valid from 10 minutes ago for 2 hours: a step of
	// 8 h forward or 2 days back that is trusted denies them.
	const jump = "offset=8h\n"
	for _, tc := range []struct {
		name   string
		centre bool
		floor  bool // a clock-floor file from an earlier run, written a minute ago
		phases []clockPhase
	}{
		// The centre outranks even NTP vouching for the step.
		{"centre offset available", true, false, []clockPhase{
			{"before", "ntp=unsynchronised\n", 10, 0, "wall"},
			{"jumped", jump + "ntp=synchronised\n", 60, 0, "centre"},
			{"corrected", "ntp=synchronised\n", 60, 0, "wall"},
		}},
		{"air-gapped, NTP unsynchronised by the step", false, false, []clockPhase{
			{"before", "ntp=synchronised\n", 10, 0, "wall"},
			{"jumped", jump + "ntp=unsynchronised\n", 60, 0, "monotonic"},
			{"corrected", "ntp=synchronised\n", 60, 0, "wall"},
		}},
		{"air-gapped, NTP vouches for the wrong step", false, false, []clockPhase{
			{"before", "ntp=synchronised\n", 10, 0, "wall"},
			{"jumped", jump + "ntp=synchronised\n", 60, 60, "wall"},
			{"corrected", "ntp=synchronised\n", 60, 0, "wall"},
		}},
		// A flat RTC battery: the box boots two days behind, before NTP.
		{"boot with the RTC behind, before NTP", false, true, []clockPhase{
			{"booted", "offset=-48h\nntp=unsynchronised\n", 30, 0, "floor"},
			{"NTP synchronised", "ntp=synchronised\n", 30, 0, "wall"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			for _, p := range tc.phases {
				n += p.scans
			}
			notBefore := time.Now().Add(-10 * time.Minute).UTC().Format(time.RFC3339)
			notAfter := time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)
			v := newVenueIssuing(t, []string{"--count", fmt.Sprint(n), "--not-before", notBefore, "--not-after", notAfter}, "g1")
			if tc.floor {
				os.WriteFile(filepath.Join(v.data("g1"), "clock-floor"), []byte(time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano)), 0o600)
			}
			clockFile := filepath.Join(t.TempDir(), "clock")
			os.WriteFile(clockFile, []byte(tc.phases[0].clock), 0o644)
			t.Setenv(testClockEnv, clockFile)
			httpPort := mqtttest.FreePort(t)
			status := func() (st struct {
				Now      time.Time `json:"now"`
				LastSync time.Time `json:"last_sync"`
				Clock    struct {
					Trusted  bool   `json:"trusted"`
					Source   string `json:"source"`
					OffsetMs int64  `json:"offset_ms"`
				} `json:"clock"`
			}) {
				r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/status", httpPort))
				if err != nil {
					return st
				}
				defer r.Body.Close()
				json.NewDecoder(r.Body).Decode(&st)
				return st
			}
			var g *proc
			if tc.centre {
				v.startServe("")
				g = v.startGate("g1", "", "--http", fmt.Sprintf("127.0.0.1:%d", httpPort))
				waitFor(t, 30*time.Second, "the gate heard from the centre", func() bool { return !status().LastSync.IsZero() })
				time.Sleep(time.Second) // the ack's offset is stored just after LastSync
			} else {
				g = startProc(t, "gated", "run", "--data", v.data("g1"), "--gate", "g1", "--output", "json",
					"--http", fmt.Sprintf("127.0.0.1:%d", httpPort))
				waitFor(t, 30*time.Second, "the gate answers /status", func() bool { return status().Clock.Source != "" })
			}
			next := 0
			for _, p := range tc.phases {
				os.WriteFile(clockFile, []byte(p.clock), 0o644)
				changed := time.Now()
				wrong, lastWrong, reasons := 0, time.Duration(0), map[string]int{}
				for range p.scans {
					g.scan(v.codes[next])
					next++
					r := g.waitDecisions(next, 30*time.Second)[next-1]
					if r.Verdict != "admit" { // every ticket is valid and shown once
						wrong, lastWrong = wrong+1, time.Since(changed)
						reasons[r.Reason]++
					}
					time.Sleep(50 * time.Millisecond)
				}
				st := status()
				t.Logf("%s: %d scans over %s, %d wrong denials %v (last %s after the clock changed); clock %+v",
					p.name, p.scans, time.Since(changed).Round(time.Millisecond), wrong, reasons, lastWrong.Round(time.Millisecond), st.Clock)
				if wrong > p.denialsAllowed {
					t.Errorf("%s: %d wrong denials, want at most %d", p.name, wrong, p.denialsAllowed)
				}
				// The last sync, stamped by the wall clock, is shown on the decision clock.
				if age := st.Now.Sub(st.LastSync); tc.centre && (age < -time.Second || age > time.Minute) {
					t.Errorf("%s: /status last sync %s, now %s", p.name, st.LastSync, st.Now)
				}
				if st.Clock.Source != p.source || st.Clock.Trusted != (p.source == "wall") {
					t.Errorf("%s: /status clock %+v, want source %s", p.name, st.Clock, p.source)
				}
			}
			if t.Failed() {
				t.Logf("gated stderr:\n%s", g.err)
			}
		})
	}
}
