package dashboard

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/verify"
)

// TestBookedAlerts: an admission the centre could not verify shows as a
// critical alert against its gate.
func TestBookedAlerts(t *testing.T) {
	s := newSite(t)
	var stranger verify.TicketID // no ticket the centre issued: no code, no proof
	stranger[0] = 0xee
	s.ingest(t, "g7", 1, stranger, "admit")
	deadline := time.Now().Add(2 * idleEvery) // no page open: the books are read every idleEvery
	for {
		var st State
		r := s.get(t, "/dashboard/state.json", "Authorization", "Bearer "+token)
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		for _, a := range st.Alerts {
			if a.Gate == "arena/g7" && a.Level == "critical" && strings.HasPrefix(a.Text, "unproven:") && strings.Contains(a.Text, stranger.String()) {
				return
			}
		}
		if time.Now().After(deadline) {
			booked, err := s.c.Alerts(0, 100)
			t.Fatalf("no unproven alert for g7: %+v (booked %+v, %v)", st.Alerts, booked, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
