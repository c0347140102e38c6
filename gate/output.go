package gate

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/gated-dev/gated/gate/cache"
)

// JSONLines writes one JSON object per decision, the same record as the journal.
type JSONLines struct {
	mu sync.Mutex
	w  io.Writer
}

// NewJSONLines returns a JSON signaller writing to w.
func NewJSONLines(w io.Writer) *JSONLines { return &JSONLines{w: w} }

// Signal implements Signaller.
func (j *JSONLines) Signal(e cache.Decision) {
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
func (c *ConsoleLines) Signal(e cache.Decision) {
	line := ConsoleLine(e)
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintln(c.w, line)
}

// ConsoleLine is the staff's one-line view of a decision.
func ConsoleLine(e cache.Decision) string {
	parts := []string{e.At.Local().Format("15:04:05"), fmt.Sprintf("%-5s", strings.ToUpper(e.Verdict)), e.Reason.Text()}
	why, more := StaffDetails(&e, time.Local)
	if why != "" {
		parts = append(parts, "("+why+")")
	}
	parts = append(parts, more...)
	if e.Ticket != "" {
		parts = append(parts, "ticket "+e.Ticket)
	}
	return strings.Join(append(parts, fmt.Sprintf("#%d", e.Seq)), " ")
}

// StaffDetails is what staff need beside the verdict, in plain words: why,
// that is where and when a used ticket was first admitted (in loc, no
// date: staff compare it with the clock on the wall) or why it was denied;
// and more, the ticket's zone and masked holder for an identity check.
func StaffDetails(e *cache.Decision, loc *time.Location) (why string, more []string) {
	switch {
	case !e.FirstUsedAt.IsZero():
		why = "first used " + e.FirstUsedAt.In(loc).Format("15:04:05") + " at gate " + e.FirstUsedGate
	case e.Detail != "" && e.Verdict != cache.Admit:
		why = e.Detail
	}
	if e.Zone != "" {
		more = append(more, "zone "+e.Zone)
	}
	if e.Holder != "" {
		more = append(more, "holder "+e.Holder)
	}
	return why, more
}
