package gate

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/gated-dev/gated/cache"
)

// JSONLines writes one JSON object per decision, the same record as the journal.
type JSONLines struct {
	mu sync.Mutex
	w  io.Writer
}

// NewJSONLines returns a JSON signaller writing to w.
func NewJSONLines(w io.Writer) *JSONLines { return &JSONLines{w: w} }

// Signal implements Signaller.
func (j *JSONLines) Signal(e cache.Entry) {
	b, _ := json.Marshal(&e)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.w.Write(append(b, '\n'))
}

// ConsoleLines writes a line per decision for gate staff.
type ConsoleLines struct {
	mu sync.Mutex
	w  io.Writer
}

// NewConsoleLines returns a console signaller writing to w.
func NewConsoleLines(w io.Writer) *ConsoleLines { return &ConsoleLines{w: w} }

// Signal implements Signaller.
func (c *ConsoleLines) Signal(e cache.Entry) {
	line := ConsoleLine(e)
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintln(c.w, line)
}

// ConsoleLine is the staff's one-line view of a decision.
func ConsoleLine(e cache.Entry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-5s %s", e.At.Local().Format("15:04:05"), strings.ToUpper(e.Verdict), e.Reason.Text())
	switch {
	case !e.FirstUsedAt.IsZero():
		// Staff compare this with the clock on the wall: local time, no date.
		fmt.Fprintf(&b, " (first used %s at gate %s)", e.FirstUsedAt.Local().Format("15:04:05"), e.FirstUsedGate)
	case e.Detail != "" && e.Verdict != cache.Admit:
		fmt.Fprintf(&b, " (%s)", e.Detail)
	}
	if e.Zone != "" {
		fmt.Fprintf(&b, " zone %s", e.Zone)
	}
	if e.Holder != "" {
		fmt.Fprintf(&b, " holder %s", e.Holder)
	}
	if e.Ticket != "" {
		fmt.Fprintf(&b, " ticket %s", e.Ticket)
	}
	fmt.Fprintf(&b, " #%d", e.Seq)
	return b.String()
}
