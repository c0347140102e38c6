package ops

import (
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the gate's Prometheus metrics, in a registry of their own
// (not the global one) so tests and several monitors never share counts.
//
//	gated_scans_total{verdict,reason}   decisions committed
//	gated_decision_seconds              scan read to decision committed and signalled
//	gated_outbox_depth                  decisions the centre has not acknowledged
//	gated_sync_lag_seconds              age of the oldest of those; 0 when none
//	gated_sync_connected                1 online, 0 offline (absent without a sync link)
//	gated_scanner_up{scanner}           1 when the scanner runs and its device is there
//	gated_ready                         what /healthz says, as 1 or 0
//
// plus the Go runtime and process collectors.
type Metrics struct {
	reg      *prometheus.Registry
	scans    *prometheus.CounterVec
	decision prometheus.Histogram
}

func newMetrics(m *Monitor) *Metrics {
	mt := &Metrics{
		reg: prometheus.NewRegistry(),
		scans: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gated_scans_total",
			Help: "Decisions committed, by verdict and reason.",
		}, []string{"verdict", "reason"}),
		decision: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gated_decision_seconds",
			Help: "Time from a scan being read to its decision being committed and signalled.",
			// Durable commits take a few ms on flash; a slow SD card or a
			// stuck disk shows in the upper buckets.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	// Every series exists from the start at 0, so rate() and alerts work
	// before the first deny of a kind.
	for _, r := range verify.Reasons {
		mt.scans.WithLabelValues(verdictOf(r), string(r))
	}
	mt.reg.MustRegister(mt.scans, mt.decision, &statusCollector{m: m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return mt
}

// Registry is what a /metrics handler serves.
func (mt *Metrics) Registry() *prometheus.Registry { return mt.reg }

func verdictOf(r verify.Reason) string {
	if r.Admits() {
		return cache.Admit
	}
	return cache.Deny
}

func (mt *Metrics) observe(e cache.Decision, now time.Time) {
	mt.scans.WithLabelValues(e.Verdict, string(e.Reason)).Inc()
	mt.decision.Observe(max(now.Sub(e.At), 0).Seconds())
}

var (
	descOutbox    = prometheus.NewDesc("gated_outbox_depth", "Decisions not yet acknowledged by the centre.", nil, nil)
	descLag       = prometheus.NewDesc("gated_sync_lag_seconds", "Age of the oldest decision not yet acknowledged by the centre; 0 when none.", nil, nil)
	descConnected = prometheus.NewDesc("gated_sync_connected", "1 when the sync link to the centre is up.", nil, nil)
	descScanner   = prometheus.NewDesc("gated_scanner_up", "1 when the scanner runs and its device is present.", []string{"scanner"}, nil)
	descReady     = prometheus.NewDesc("gated_ready", "1 when the store is open and a scanner is up (/healthz).", nil, nil)
)

// statusCollector reads the monitor's status at scrape time, so gauges
// are never stale and cost nothing between scrapes.
type statusCollector struct{ m *Monitor }

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOutbox, descLag, descConnected, descScanner, descReady} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.Status()
	ch <- prometheus.MustNewConstMetric(descOutbox, prometheus.GaugeValue, float64(st.Outbox))
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, time.Duration(st.SyncLag).Seconds())
	if st.Online != nil {
		ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, b2f(*st.Online))
	}
	for _, s := range st.Scanners {
		ch <- prometheus.MustNewConstMetric(descScanner, prometheus.GaugeValue, b2f(s.Up), s.Name)
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, b2f(st.Ready))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
