package ops_test

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/gate/ops"
	"github.com/gated-dev/gated/verify"
)

type store struct{}

func (store) SyncState() (cache.SyncState, error)          { return cache.SyncState{}, nil }
func (store) Outbox(uint64, int) ([]cache.Outgoing, error) { return nil, nil }

// A Monitor is a gate.Signaller: give it to gate.New with the other
// outputs, tell it about the store and scanners, and serve its Handler.
func ExampleMonitor() {
	m := ops.NewMonitor(ops.Options{Gate: "north-1"})
	m.SetStore(store{})
	m.ScannerStarted("stdin", nil)
	m.Signal(cache.Decision{Verdict: cache.Deny, Reason: verify.ReasonAlreadyUsed, At: time.Now()})

	srv := httptest.NewServer(m.Handler()) // in gated: ops.Listen(addr, m.Handler(), log)
	defer srv.Close()
	r, _ := srv.Client().Get(srv.URL + "/metrics")
	b, _ := io.ReadAll(r.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, `gated_scans_total{reason="already_used"`) || strings.HasPrefix(l, "gated_ready") {
			fmt.Println(l)
		}
	}
	st := m.Status()
	fmt.Println(st.Ready, st.Denied)
	// Output:
	// gated_ready 1
	// gated_scans_total{reason="already_used",verdict="deny"} 1
	// true 1
}
