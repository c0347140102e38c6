package ops

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
)

type fakeStore struct {
	outbox int
	oldest time.Time
	err    error
}

func (f *fakeStore) SyncState() (cache.SyncState, error) {
	return cache.SyncState{Outbox: f.outbox}, f.err
}
func (f *fakeStore) Outbox(after uint64, max int) ([]cache.Outgoing, error) {
	b, _ := json.Marshal(map[string]any{"at": f.oldest})
	return []cache.Outgoing{{Seq: 1, Record: b}}, nil
}

type fakeDevice struct{ connected bool }

func (d fakeDevice) Connected() bool { return d.connected }

type fakeLink struct{ on bool }

func (l fakeLink) Connected() bool { return l.on }

func TestReadiness(t *testing.T) {
	now := time.Date(2026, 5, 1, 18, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		setup    func(m *Monitor)
		ready    bool
		notReady string
	}{
		{"nothing open", func(m *Monitor) {}, false, "store not open"},
		{"store, no scanner", func(m *Monitor) { m.SetStore(&fakeStore{}) }, false, "no scanner running"},
		{"stdin running", func(m *Monitor) {
			m.SetStore(&fakeStore{})
			m.ScannerStarted("stdin", nil)
		}, true, ""},
		{"serial unplugged", func(m *Monitor) {
			m.SetStore(&fakeStore{})
			m.ScannerStarted("serial:/dev/ttyACM0", fakeDevice{false})
		}, false, "no scanner is up"},
		{"one of two plugged", func(m *Monitor) {
			m.SetStore(&fakeStore{})
			m.ScannerStarted("serial:/dev/ttyACM0", fakeDevice{false})
			m.ScannerStarted("serial:/dev/ttyACM1", fakeDevice{true})
		}, true, ""},
		{"scanner ended", func(m *Monitor) {
			m.SetStore(&fakeStore{})
			m.ScannerStarted("stdin", nil)
			m.ScannerStopped("stdin", nil)
		}, false, "no scanner is up"},
		{"store broken", func(m *Monitor) {
			m.SetStore(&fakeStore{err: errors.New("disk gone")})
			m.ScannerStarted("stdin", nil)
		}, false, "store unreadable: disk gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMonitor(Options{Gate: "g", Now: func() time.Time { return now }})
			tc.setup(m)
			st := m.Status()
			if st.Ready != tc.ready || !strings.Contains(st.NotReady, tc.notReady) {
				t.Fatalf("ready %v %q, want %v %q", st.Ready, st.NotReady, tc.ready, tc.notReady)
			}
		})
	}
}

func TestStatusCountsAndLag(t *testing.T) {
	now := time.Date(2026, 5, 1, 18, 0, 0, 0, time.UTC)
	m := NewMonitor(Options{Gate: "g", Now: func() time.Time { return now }, Recent: 2})
	m.SetStore(&fakeStore{outbox: 3, oldest: now.Add(-90 * time.Second)})
	m.SetSync(fakeLink{false})
	for i, r := range []verify.Reason{verify.ReasonOK, verify.ReasonAlreadyUsed, verify.ReasonOK} {
		v := cache.Deny
		if r.Admits() {
			v = cache.Admit
		}
		m.Signal(cache.Decision{Seq: uint64(i + 1), Verdict: v, Reason: r, At: now})
	}
	st := m.Status()
	if st.Admitted != 2 || st.Denied != 1 || st.ByReason["ok"] != 2 || st.ByReason["already_used"] != 1 {
		t.Errorf("counts %+v", st)
	}
	if len(st.Recent) != 2 || st.Last.Seq != 3 {
		t.Errorf("recent %+v, last %+v", st.Recent, st.Last)
	}
	if st.Online == nil || *st.Online || st.Outbox != 3 || time.Duration(st.SyncLag) != 90*time.Second {
		t.Errorf("online %v outbox %d lag %v", st.Online, st.Outbox, time.Duration(st.SyncLag))
	}
}

func TestHandler(t *testing.T) {
	m := NewMonitor(Options{Gate: "g"})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	get := func(path string) (int, string) {
		r, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "store not open") {
		t.Errorf("healthz before start: %d %q", code, body)
	}
	m.SetStore(&fakeStore{})
	m.ScannerStarted("stdin", nil)
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthz when ready: %d %q", code, body)
	}
	m.Signal(cache.Decision{Verdict: cache.Deny, Reason: verify.ReasonRevoked, At: time.Now()})
	_, body := get("/metrics")
	for _, want := range []string{
		`gated_scans_total{reason="revoked",verdict="deny"} 1`,
		`gated_scans_total{reason="ok",verdict="admit"} 0`,
		`gated_decision_seconds_count 1`,
		`gated_scanner_up{scanner="stdin"} 1`,
		`gated_ready 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if _, body := get("/status"); !strings.Contains(body, `"denied": 1`) {
		t.Errorf("/status: %s", body)
	}
}

func TestHealthyTimesOut(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	m := NewMonitor(Options{})
	m.SetStore(blockingStore{block})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := m.Healthy(ctx); err == nil {
		t.Fatal("a store that does not answer is healthy")
	}
}

type blockingStore struct{ c chan struct{} }

func (b blockingStore) SyncState() (cache.SyncState, error) { <-b.c; return cache.SyncState{}, nil }
func (b blockingStore) Outbox(uint64, int) ([]cache.Outgoing, error) {
	return nil, nil
}

type fakeSwitch struct{ on *bool }

func (l fakeSwitch) Connected() bool { return *l.on }

// Without LastSync from the link, the last sync is the last moment the
// gate was online with nothing left to send.
func TestLastSyncFallback(t *testing.T) {
	now := time.Date(2026, 5, 1, 18, 0, 0, 0, time.UTC)
	m := NewMonitor(Options{Now: func() time.Time { return now }})
	store := &fakeStore{}
	m.SetStore(store)
	on := false
	m.SetSync(fakeSwitch{&on})
	if st := m.Status(); !st.LastSync.IsZero() {
		t.Fatalf("never online, last sync %v", st.LastSync)
	}
	on = true
	synced := now
	m.Status()
	now = now.Add(time.Minute)
	on, store.outbox, store.oldest = false, 2, now
	if st := m.Status(); !st.LastSync.Equal(synced) {
		t.Fatalf("offline: last sync %v, want %v", st.LastSync, synced)
	}
	on = true // online again but entries not yet acked
	if st := m.Status(); !st.LastSync.Equal(synced) {
		t.Fatalf("online, outbox 2: last sync %v, want %v", st.LastSync, synced)
	}
	store.outbox = 0
	if st := m.Status(); !st.LastSync.Equal(now) {
		t.Fatalf("caught up: last sync %v, want %v", st.LastSync, now)
	}
}

// failingDisk is a store whose disk stopped taking commits.
type failingDisk struct {
	fakeStore
	health cache.Health
	probes int
	heals  bool // the next probe succeeds
}

func (f *failingDisk) Health() cache.Health { return f.health }
func (f *failingDisk) Probe() error {
	f.probes++
	if f.heals {
		f.health = cache.Health{OK: true}
		return nil
	}
	return errors.New(f.health.Err)
}

// A failing disk makes the gate unready and fails the watchdog's check,
// which probes the disk, so a disk that works again clears it.
func TestStorageFaultIsUnhealthy(t *testing.T) {
	since := time.Date(2026, 5, 1, 18, 0, 0, 0, time.UTC)
	disk := &failingDisk{health: cache.Health{Err: "write gate.db: input/output error", Since: since, Failures: 3}}
	m := NewMonitor(Options{})
	m.SetStore(disk)
	m.ScannerStarted("stdin", nil)
	st := m.Status()
	if st.Ready || !strings.Contains(st.NotReady, "storage fault") || st.Storage == nil || st.Storage.OK ||
		st.Storage.Error == "" || !st.Storage.Since.Equal(since) || st.Storage.Failures != 3 {
		t.Fatalf("status on a failing disk: ready %v %q %+v", st.Ready, st.NotReady, st.Storage)
	}
	if err := m.Healthy(context.Background()); err == nil || disk.probes != 1 {
		t.Fatalf("watchdog check on a failing disk: %v after %d probes", err, disk.probes)
	}
	disk.heals = true
	if err := m.Healthy(context.Background()); err != nil {
		t.Fatalf("watchdog check after the disk recovered: %v", err)
	}
	if st := m.Status(); !st.Ready || !st.Storage.OK {
		t.Fatalf("status after the disk recovered: %+v", st)
	}
}
