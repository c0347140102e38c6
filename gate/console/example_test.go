package console_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/gate/console"
	"github.com/gated-dev/gated/gate/ops"
	"github.com/gated-dev/gated/verify"
)

// Layout is the frame as rows of text with one style each; Paint turns
// them into terminal output. A Screen does both on every decision.
func ExampleLayout() {
	now := time.Date(2026, 6, 1, 18, 30, 0, 0, time.UTC)
	v := console.View{
		Status: ops.Status{Gate: "north-1", Now: now, Started: now.Add(-time.Hour), Ready: true, Admitted: 1,
			Scanners: []ops.ScannerStatus{{Name: "stdin", Up: true, State: "up"}}},
		Last: &cache.Decision{Seq: 1, At: now, Verdict: cache.Admit, Reason: verify.ReasonOK, Zone: "GA"},
		Hold: 4 * time.Second, Loc: time.UTC,
	}
	for _, line := range strings.Split(console.Plain(console.Layout(v, 40, 10)), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			fmt.Println(line)
		}
	}
	// Output:
	// gated · gate north-1 STANDALONE (no sync configured)   18:30:00
	// ADMIT
	// ADMIT: valid ticket
	// zone GA · 18:30:00 · #1
	// Admitted 1      Denied 0      Outbox 0      Since 17:30
	// Scanners: ● stdin up
}
