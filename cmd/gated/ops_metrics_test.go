package main

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var httpAddrRE = regexp.MustCompile(`msg="http listening".* addr=(\S+)`)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return r.StatusCode, string(b)
}

// metric returns a sample's value from Prometheus text, or -1.
func metric(body, series string) float64 {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// The real gated serves /healthz, /metrics and /status on --http; after
// scans the counters and the latency histogram have moved.
func TestHTTPMetricsAfterScans(t *testing.T) {
	s := newSite(t)
	codes := s.issue("--event", "expo", "--count", "2")
	s.provision("expo")
	g := startLive(t, s, nil, "--output", "json", "--http", "127.0.0.1:0")
	base := "http://" + g.waitStderr(httpAddrRE)

	_, before := get(t, base+"/metrics")
	if v := metric(before, `gated_scans_total{reason="ok",verdict="admit"}`); v != 0 {
		t.Fatalf("admit counter before any scan: %v\n%s", v, before)
	}
	if v := metric(before, `gated_decision_seconds_count`); v != 0 {
		t.Fatalf("histogram count before any scan: %v", v)
	}
	g.scan(codes[0], codes[1], codes[0], "not a ticket")

	code, health := get(t, base+"/healthz")
	if code != 200 || health != "ok\n" {
		t.Errorf("/healthz: %d %q", code, health)
	}
	_, after := get(t, base+"/metrics")
	for series, want := range map[string]float64{
		`gated_scans_total{reason="ok",verdict="admit"}`:          2,
		`gated_scans_total{reason="already_used",verdict="deny"}`: 1,
		`gated_scans_total{reason="malformed",verdict="deny"}`:    1,
		`gated_scans_total{reason="revoked",verdict="deny"}`:      0,
		`gated_decision_seconds_count`:                            4,
		`gated_decision_seconds_bucket{le="+Inf"}`:                4,
		`gated_outbox_depth`:                                      4, // no sync link: nothing acked
		`gated_scanner_up{scanner="stdin"}`:                       1,
		`gated_ready`:                                             1,
	} {
		if got := metric(after, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if v := metric(after, "gated_decision_seconds_sum"); v <= 0 {
		t.Errorf("gated_decision_seconds_sum = %v, want > 0", v)
	}
	if v := metric(after, "gated_sync_lag_seconds"); v < 0 {
		t.Errorf("gated_sync_lag_seconds = %v", v)
	}

	_, body := get(t, base+"/status")
	var st struct {
		Gate     string         `json:"gate"`
		Event    string         `json:"event"`
		Ready    bool           `json:"ready"`
		Admitted int            `json:"admitted"`
		Denied   int            `json:"denied"`
		ByReason map[string]int `json:"by_reason"`
		Outbox   int            `json:"outbox"`
		Scanners []struct {
			Name string `json:"name"`
			Up   bool   `json:"up"`
		} `json:"scanners"`
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	if st.Gate != "north-1" || st.Event != "expo" || !st.Ready || st.Admitted != 2 || st.Denied != 2 ||
		st.ByReason["already_used"] != 1 || st.Outbox != 4 || len(st.Scanners) != 1 || !st.Scanners[0].Up {
		t.Errorf("/status: %s", body)
	}

	// Input ends: the scanner is gone and gated exits cleanly.
	g.stdin.Close()
	if err := <-g.done; err != nil {
		t.Fatalf("gated after end of input: %v", err)
	}
}

func TestHTTPPortInUse(t *testing.T) {
	s := newSite(t)
	s.issue("--event", "expo", "--count", "1")
	s.provision("expo")
	g := startLive(t, s, nil, "--output", "json", "--http", "127.0.0.1:0")
	addr := g.waitStderr(httpAddrRE)
	s2 := newSite(t)
	s2.issue("--event", "expo", "--count", "1")
	s2.provision("expo")
	r := runBin(t, strings.NewReader(""), "gated", "run", "--data", s2.gate, "--gate", "g2", "--http", addr)
	if r.code != 2 || !strings.Contains(r.stderr, "--http") {
		t.Fatalf("port in use: exit %d, stderr %q; want 2 and advice naming --http", r.code, r.stderr)
	}
	g.stop()
}

func TestHTTPConfigErrors(t *testing.T) {
	s := newSite(t)
	s.issue("--event", "expo", "--count", "1")
	s.provision("expo")
	for _, tc := range []struct{ addr, want string }{
		{"9127", "use HOST:PORT"},
		{"127.0.0.1:http", "not a number"},
		{"gate.example:9127", "use an IP address"},
	} {
		r := runBin(t, strings.NewReader(""), "gated", "run", "--data", s.gate, "--gate", "g", "--http", tc.addr)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("--http %s: exit %d %q, want 2 and %q", tc.addr, r.code, r.stderr, tc.want)
		}
	}
}

// With a broker that does not answer, the gate still decides, and says it
// is offline with decisions waiting.
func TestHTTPStatusOffline(t *testing.T) {
	s := newSite(t)
	codes := s.issue("--event", "expo", "--count", "1")
	s.provision("expo")
	g := startLive(t, s, nil, "--output", "json", "--http", "127.0.0.1:0", "--broker", "tcp://127.0.0.1:1", "--venue", "hall")
	base := "http://" + g.waitStderr(httpAddrRE)
	if d := g.scan(codes[0]); !strings.Contains(d[0], `"verdict":"admit"`) {
		t.Fatalf("offline decision: %s", d[0])
	}
	_, body := get(t, base+"/metrics")
	if v := metric(body, "gated_sync_connected"); v != 0 {
		t.Errorf("gated_sync_connected = %v, want 0", v)
	}
	if v := metric(body, "gated_outbox_depth"); v != 1 {
		t.Errorf("gated_outbox_depth = %v, want 1", v)
	}
	_, body = get(t, base+"/status")
	if !strings.Contains(body, `"online": false`) || !strings.Contains(body, `"outbox": 1`) {
		t.Errorf("/status offline: %s", body)
	}

	// Input ends: a syncing gate stays up (entries still wait for the
	// centre) and says it is not ready, rather than dying or lying.
	g.stdin.Close()
	g.waitStderr(regexp.MustCompile(`every scanner has stopped; still syncing`))
	if code, body := get(t, base+"/healthz"); code != 503 || !strings.Contains(body, "no scanner is up") {
		t.Errorf("/healthz with no scanner: %d %q", code, body)
	}
	g.stop()
}

// A serial scanner whose device node is missing shows as down; the gate
// is ready while another scanner is up.
func TestScannerHealth(t *testing.T) {
	s := newSite(t)
	s.issue("--event", "expo", "--count", "1")
	s.provision("expo")
	g := startLive(t, s, nil, "--output", "json", "--http", "127.0.0.1:0",
		"--scanner", "stdin:", "--scanner", "serial:/dev/ttyGATEDTEST9?model=honeywell-voyager-1470g")
	base := "http://" + g.waitStderr(httpAddrRE)
	_, body := get(t, base+"/metrics")
	for series, want := range map[string]float64{
		`gated_scanner_up{scanner="stdin"}`:                     1,
		`gated_scanner_up{scanner="serial:/dev/ttyGATEDTEST9"}`: 0,
		`gated_ready`: 1,
	} {
		if got := metric(body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if _, body := get(t, base+"/status"); !strings.Contains(body, `"state": "not connected"`) {
		t.Errorf("/status: %s", body)
	}
	g.stop()
}
