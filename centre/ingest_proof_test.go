package centre

import (
	"fmt"
	"testing"
	"time"

	"github.com/gated-dev/gated/verify"
)

// flip changes the last byte of a code's payload: the last signature.
func flip(t testing.TB, code string) string {
	t.Helper()
	b, err := verify.Base45Decode(code[3:])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	return code[:3] + verify.Base45Encode(b)
}

// TestIngestProof: an admission is a use only when the code the gate says
// it scanned verifies; anything else is an alert and never reaches the
// uses log (so never another gate).
func TestIngestProof(t *testing.T) {
	c, _ := newCentre(t)
	past := time.Now().Add(-48 * time.Hour)
	static, err := c.Issue(IssueRequest{Event: "E", Count: 4})
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := c.Issue(IssueRequest{Event: "E", Count: 1, NotAfter: past})
	other, _ := c.Issue(IssueRequest{Event: "F", Count: 1})
	rot, err := c.Issue(IssueRequest{Event: "E", Count: 4, Rotating: true})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	present := func(i int, short bool) string {
		code, err := c.Present(rot[i].ID, now, short)
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	for i, tc := range []struct {
		name   string
		ticket verify.TicketID
		code   string
		alert  string // "" for a use
	}{
		{"static", static[0].ID, static[0].Code(), ""},
		{"expired by now: the window is the gate's", expired[0].ID, expired[0].Code(), ""},
		{"static, issuer signature forged", static[1].ID, flip(t, static[1].Code()), AlertUnproven},
		{"no code", static[2].ID, "", AlertUnproven},
		{"another ticket's code", static[3].ID, static[0].Code(), AlertUnproven},
		{"garbage", static[3].ID, "G1:nonsense", AlertUnproven},
		{"ticket of another event", other[0].ID, other[0].Code(), AlertOtherEvent},
		{"rotating", rot[0].ID, present(0, false), ""},
		{"rotating, phone signature forged", rot[1].ID, flip(t, present(1, false)), AlertUnproven},
		{"short rotating", rot[2].ID, present(2, true), ""},
		{"short rotating, phone signature forged", rot[3].ID, flip(t, present(3, true)), AlertUnproven},
	} {
		inst := fmt.Sprintf("p%d", i)
		res, err := c.Ingest("v", batchCode(t, "g1", inst, tc.ticket, tc.code, "admit", 1))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		used := len(res.Logged) == 1 && res.Logged[0].Ticket == tc.ticket
		var kind string
		for _, a := range res.Alerts {
			if a.EntryID == inst+"-1" {
				kind = a.Kind
			}
		}
		if used != (tc.alert == "") || kind != tc.alert {
			t.Errorf("%s: logged %v, alert %q; want alert %q", tc.name, res.Logged, kind, tc.alert)
		}
	}
	us, _, err := c.Uses("E", 0, 100)
	if err != nil || len(us) != 4 {
		t.Errorf("uses log holds %d uses (%v); want the 4 proven", len(us), err)
	}
	as, _ := c.Alerts(0, 100)
	if len(as) < 7 {
		t.Errorf("%d alerts booked; want 7", len(as))
	}
}

// TestSanityAlerts: a gate admitting faster than a lane passes, and a new
// store instance behind a gate's login, raise alerts.
func TestSanityAlerts(t *testing.T) {
	c, _ := newCentre(t)
	c.SetSanity(SanityOptions{MaxRate: 2, Window: 5 * time.Second})
	ts, err := c.Issue(IssueRequest{Event: "E", Count: 30})
	if err != nil {
		t.Fatal(err)
	}
	kinds := func() map[string]int {
		as, err := c.Alerts(0, 100)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int{}
		for _, a := range as {
			m[a.Kind]++
		}
		return m
	}
	// 10 admissions in 5 s is the limit, not above it.
	for i := range 10 {
		if _, err := c.Ingest("v", batch(t, "g1", "i1", &ts[i], "admit", uint64(i+1))); err != nil {
			t.Fatal(err)
		}
	}
	if k := kinds(); k[AlertRate] != 0 {
		t.Fatalf("alerts at the limit: %v", k)
	}
	if _, err := c.Ingest("v", batch(t, "g1", "i1", &ts[10], "admit", 11)); err != nil {
		t.Fatal(err)
	}
	if k := kinds(); k[AlertRate] != 1 {
		t.Fatalf("alerts above the limit: %v; want one rate alert", k)
	}
	// Another gate's admissions are its own.
	if _, err := c.Ingest("v", batch(t, "g2", "j1", &ts[11], "admit", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ingest("v", batch(t, "g1", "i2", &ts[12], "admit", 1)); err != nil {
		t.Fatal(err)
	}
	if k := kinds(); k[AlertNewInstance] != 1 || k[AlertRate] != 1 {
		t.Errorf("after a new instance at g1: %v; want one new_instance alert", k)
	}
}

// BenchmarkIngestAdmissions: batches of 500 first admissions with their
// codes, whose signatures the centre checks, against the same batches of
// denials, which need no proof (go test -bench IngestAdmissions ./centre).
func BenchmarkIngestAdmissions(b *testing.B) {
	c, _ := newCentre(b)
	const per = 500
	ts, err := c.Issue(IssueRequest{Event: "E", Count: per * 20})
	if err != nil {
		b.Fatal(err)
	}
	for _, verdict := range []string{"deny", "admit"} {
		b.Run(verdict, func(b *testing.B) {
			n := 0
			for b.Loop() {
				var seqs []uint64
				for q := range per {
					seqs = append(seqs, uint64(q+1))
				}
				bt := batchCode(b, "g1", fmt.Sprintf("%s%d", verdict, n), ts[0].ID, "", verdict, seqs...)
				for i := range bt.Parsed {
					tk := &ts[(n*per+i)%len(ts)]
					bt.Parsed[i].Ticket, bt.Parsed[i].Code = tk.ID.String(), tk.Code()
				}
				if _, err := c.Ingest("v", bt); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*per), "ns/entry")
		})
	}
}
