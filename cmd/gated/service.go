package main

// What makes `gated run` a well-behaved Linux daemon, kept out of run.go so
// the decision path stays short to read: the staff console, the local HTTP
// endpoint, systemd notification and watchdog, journald-friendly logs, and
// SIGHUP reloads of configuration and scanners.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/gated-dev/gated/gate"
	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/gate/clock"
	"github.com/gated-dev/gated/gate/console"
	"github.com/gated-dev/gated/gate/gatelink"
	"github.com/gated-dev/gated/gate/ops"
	"github.com/gated-dev/gated/gate/scanner"
	"github.com/gated-dev/gated/internal/daemonlog"
	"github.com/gated-dev/gated/sdnotify"
	"github.com/gated-dev/gated/verify"
)

// service holds gated run's operational parts. Create it with newDaemon
// right after the config is read, so SIGHUP is caught from the start
// (its default action would kill the process).
type service struct {
	args []string
	io   stdio
	// wall is the wall clock; now is the decision time, from clock, which
	// follows the wall clock only while it can be trusted.
	wall   func() time.Time
	now    func() time.Time
	clock  *clock.Clock
	level  slog.LevelVar
	log    *slog.Logger
	mon    *ops.Monitor
	notify *sdnotify.Notifier
	screen *console.Screen // nil unless the console owns a terminal
	hup    chan os.Signal

	mu     sync.Mutex
	cfg    *gate.Config
	g      *gate.Gate
	policy verify.Policy
	trust  *verify.TrustList
}

func newDaemon(args []string, cfg *gate.Config, io stdio, now func() time.Time) *service {
	d := &service{args: args, io: io, wall: now, cfg: cfg, hup: make(chan os.Signal, 1)}
	d.now = func() time.Time { return d.clock.Now() } // the screen reads it once running
	signal.Notify(d.hup, syscall.SIGHUP)
	d.level.Set(parseLevel(cfg.LogLevel))
	logOut := io.errOut
	if cfg.Output == "console" && isTerminal(io.out) {
		d.screen = console.New(io.out, d, console.Options{Hold: cfg.ConsoleHold, Now: d.now})
		if isTerminal(io.errOut) {
			// Same screen: logs go to its foot instead of over it.
			logOut = d.screen.LogWriter()
		}
	}
	d.log = daemonlog.New(logOut, daemonlog.Options{Level: &d.level}).With("component", "gated", "gate", cfg.Gate)
	d.clock = newClock(cfg, &d.wall, d.log.With("component", "clock"))
	d.mon = ops.NewMonitor(ops.Options{Gate: cfg.Gate, Now: d.now, Logger: d.log.With("component", "ops")})
	d.mon.SetClock(clockStatus{d.clock})
	d.notify = sdnotify.New(d.log.With("component", "systemd"))
	return d
}

// testClockEnv names a file that moves the wall clock gated sees (see
// clock.FileClock): tests of the real binary step the clock with it, since
// libfaketime does not move Go's clock. Not for production.
const testClockEnv = "GATED_TEST_CLOCK_FILE"

// newClock makes the decision clock from the config; under testClockEnv
// it replaces *wall with the file's clock.
func newClock(cfg *gate.Config, wall *func() time.Time, log *slog.Logger) *clock.Clock {
	ntp := clock.Kernel()
	if cfg.ClockNTP == "off" {
		ntp = clock.NoNTP()
	}
	if f := os.Getenv(testClockEnv); f != "" {
		fc := clock.FileClock{Path: f}
		*wall, ntp = fc.Now, fc
		log.Warn("test clock in use: the wall clock is read through a file", "env", testClockEnv, "file", f)
	}
	return clock.New(clock.Options{Wall: *wall, NTP: ntp, FloorFile: cfg.FloorFile(), Tolerance: cfg.ClockTolerance, Logger: log})
}

// clockStatus shows the clock in /status and on the console.
type clockStatus struct{ c *clock.Clock }

func (c clockStatus) ClockStatus() ops.ClockStatus {
	st := c.c.State()
	return ops.ClockStatus{Trusted: st.Trusted, Source: st.Source, OffsetMs: st.Offset.Milliseconds(), Detail: st.Detail}
}

// syncOnClock shows the link's last sync on the decision clock: the link
// stamps it with the wall clock, which while not trusted is hours off the
// "now" the console and /status compare it with.
type syncOnClock struct {
	*gatelink.Link
	clock *clock.Clock
}

func (s syncOnClock) LastSync() time.Time {
	t := s.Link.LastSync()
	if t.IsZero() {
		return t
	}
	return t.Add(s.clock.State().Offset)
}

// Status makes the service the console's status source.
func (d *service) Status() ops.Status { return d.mon.Status() }

func parseLevel(s string) slog.Level {
	var l slog.Level
	l.UnmarshalText([]byte(s)) // validated by Config.Validate
	return l
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && console.IsTerminal(f)
}

// signallers are the decision's outputs: the monitor first, so counts
// include a decision by the time the console shows it.
func (d *service) signallers() []gate.Signaller {
	var out gate.Signaller
	switch {
	case d.screen != nil:
		out = d.screen
	case d.cfg.Output == "json":
		out = gate.NewJSONLines(d.io.out)
	default:
		out = gate.NewConsoleLines(d.io.out)
	}
	return []gate.Signaller{d.mon, out}
}

// trustChanged swaps in a verifier for a new trust list from the centre,
// keeping the policy of the latest reload.
func (d *service) trustChanged(tl *verify.TrustList) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.trust = tl
	if d.g != nil {
		d.g.SetVerifier(verify.NewVerifier(d.policy, tl))
	}
}

func (d *service) policyChanged(p verify.Policy) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.policy = p
	d.g.SetVerifier(verify.NewVerifier(p, d.trust))
}

// openScanner opens a source, at start and on reload.
func (d *service) openScanner(uri string) (scanner.Source, error) {
	d.mu.Lock()
	maxFrame, _ := d.cfg.MaxFrameSize() // validated
	d.mu.Unlock()
	return scanner.Open(uri, scanner.Env{Stdin: d.io.in, Now: d.now, Log: d.log, MaxFrame: maxFrame})
}

// run serves the gate until every source has ended or ctx is done:
// HTTP, console, watchdog, and reloads on SIGHUP. sources are opened
// from cfg.Scanners, in order.
func (d *service) run(ctx context.Context, g *gate.Gate, store *cache.Store, st *cache.State,
	policy verify.Policy, sources []scanner.Source) error {
	defer signal.Stop(d.hup)
	d.mu.Lock()
	d.g, d.policy = g, policy
	if d.trust == nil {
		d.trust = st.Trust
	}
	d.mu.Unlock()
	d.mon.SetStore(store)
	d.mon.SetEvent(st.Event)

	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var bgWG sync.WaitGroup
	defer func() {
		stopBg()
		bgWG.Wait()
		if d.screen != nil {
			// The full screen is gone with the alternate buffer: leave the
			// day's totals on the terminal.
			st := d.mon.Status()
			fmt.Fprintf(d.io.out, "gated stopped: %d admitted, %d denied, %d not yet synced (every decision: gated journal --data %s)\n",
				st.Admitted, st.Denied, st.Outbox, d.cfg.Data)
		}
	}()
	if addr := d.cfg.HTTPAddr(); addr != "" {
		srv, err := ops.Listen(addr, d.mon.Handler(), d.log.With("component", "http"))
		if err != nil {
			return &gate.ConfigError{Msg: err.Error()}
		}
		bgWG.Go(func() { srv.Serve(bg) })
	}
	if d.screen != nil {
		if f, ok := d.io.in.(*os.File); ok && console.IsTerminal(f) {
			if restore, err := console.QuietInput(f); err == nil {
				defer restore()
			}
		}
		bgWG.Go(func() { d.screen.Run(bg) })
	}
	bgWG.Go(func() { d.notify.Watchdog(bg, d.mon.Healthy) })
	bgWG.Go(func() { d.clock.Run(bg) })
	bgWG.Go(func() { d.statusLoop(bg) })

	sup := gate.NewSupervisor(g, d.mon)
	for i, src := range sources {
		uri := src.Name()
		if len(sources) == len(d.cfg.Scanners) {
			uri = d.cfg.Scanners[i] // reloads compare URIs
		}
		sup.Start(ctx, uri, src)
	}
	d.notify.Ready(d.statusLine())
	d.log.Info("ready", "http", d.cfg.HTTPAddr(), "console", d.screen != nil)
	for {
		select {
		case <-ctx.Done():
			d.notify.Stopping()
			d.log.Info("stopping: finishing scans in flight")
			sup.Wait()
			return nil
		case <-d.hup:
			d.reload(ctx, sup)
		case <-sup.Ended():
			if sup.Count() > 0 {
				continue
			}
			if d.mon.Status().Online == nil {
				sup.Wait()
				return nil // input ended and nothing else to do (stdin: in scripts)
			}
			// A syncing gate keeps syncing, answering /healthz (not ready),
			// pinging the watchdog and taking reloads that may add a
			// scanner back, until it is told to stop.
			d.log.Warn("every scanner has stopped; still syncing until stopped (fix scanners: in the config and reload)")
		}
	}
}

func (d *service) statusLine() string {
	st := d.mon.Status()
	up := 0
	for _, s := range st.Scanners {
		if s.Up {
			up++
		}
	}
	line := fmt.Sprintf("%d admitted, %d denied; scanners %d/%d up; outbox %d", st.Admitted, st.Denied, up, len(st.Scanners), st.Outbox)
	if st.Online != nil && !*st.Online {
		line += "; OFFLINE"
	}
	return line
}

// statusLoop keeps `systemctl status` current.
func (d *service) statusLoop(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.notify.Status(d.statusLine())
		}
	}
}

// reload re-reads the config file and flags (flags still win) and applies
// what can change while scanning: log level, zones, strict mode, rotating
// code windows, console hold, and the scanner list. Scanners whose URI is
// unchanged keep running, so no scan in their hands is lost. Settings that
// need a restart are named in a warning. A config that does not validate,
// or a new scanner that does not open, changes nothing.
func (d *service) reload(ctx context.Context, sup *gate.Supervisor) {
	d.notify.Reloading()
	defer func() { d.notify.Ready(d.statusLine()) }()
	cfg, err := runConfig(d.args)
	if err != nil {
		d.log.Error("reload refused; still running the previous configuration", "err", err)
		return
	}
	d.mu.Lock()
	old := d.cfg
	d.mu.Unlock()
	for _, f := range restartOnly(old, cfg) {
		d.log.Warn("setting changed; it takes effect at the next restart (systemctl restart gated)", "setting", f)
	}
	opened := map[string]scanner.Source{}
	for _, uri := range cfg.Scanners {
		if sup.Has(uri) || opened[uri] != nil {
			continue
		}
		src, err := d.openScanner(uri)
		if err != nil {
			d.log.Error("reload refused; still running the previous configuration", "err", err)
			return
		}
		opened[uri] = src
	}
	d.level.Set(parseLevel(cfg.LogLevel))
	d.mu.Lock()
	p := d.policy
	d.mu.Unlock()
	p.Zones, p.Strict, p.MaxCodeAge, p.MaxCodeSkew = cfg.Zones, cfg.Strict, cfg.MaxCodeAge, cfg.MaxCodeSkew
	d.policyChanged(p)
	if d.screen != nil {
		d.screen.SetHold(cfg.ConsoleHold)
	}
	added, removed := sup.Apply(ctx, cfg.Scanners, opened)
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	d.log.Info("configuration reloaded", "zones", cfg.Zones, "strict", cfg.Strict,
		"scanners_added", added, "scanners_removed", removed, "log_level", cfg.LogLevel)
}

// restartOnly names the settings that differ and cannot change in place.
func restartOnly(a, b *gate.Config) []string {
	var out []string
	for _, f := range []struct {
		name string
		a, b any
	}{
		{"data", a.Data, b.Data}, {"gate", a.Gate, b.Gate}, {"output", a.Output, b.Output},
		{"http", a.HTTPAddr(), b.HTTPAddr()}, {"broker", a.Broker, b.Broker}, {"venue", a.Venue, b.Venue},
		{"mqtt_username", a.MQTTUsername, b.MQTTUsername}, {"mqtt_password", a.MQTTPassword, b.MQTTPassword},
		{"tls_ca", a.TLSCA, b.TLSCA}, {"tls_cert", a.TLSCert, b.TLSCert}, {"tls_key", a.TLSKey, b.TLSKey},
		{"clock_tolerance", a.ClockTolerance, b.ClockTolerance}, {"clock_ntp", a.ClockNTP, b.ClockNTP},
		{"clock_floor_file", a.ClockFloorFile, b.ClockFloorFile}, {"max_frame", a.MaxFrame, b.MaxFrame},
	} {
		if f.a != f.b {
			out = append(out, f.name)
		}
	}
	return out
}
