package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gated-dev/gated/gate"
	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/gate/gatelink"
	"github.com/gated-dev/gated/gate/scanner"
	"github.com/gated-dev/gated/internal/cli"
	"github.com/gated-dev/gated/verify"
)

// runConfig merges the config file and the flags given; flags win.
func runConfig(args []string) (*gate.Config, error) {
	fs := flag.NewFlagSet("gated run", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "YAML config file; flags override it")
	data := fs.String("data", "", "gate data directory")
	gateID := fs.String("gate", "", "this gate's id")
	var scanners, zones cli.Strings
	fs.Var(&scanners, "scanner", "scanner URI, repeatable (default stdin:)")
	fs.Var(&zones, "zone", "zone this gate admits, repeatable (default: all)")
	output := fs.String("output", "", "console (default) or json")
	strict := fs.Bool("strict", false, "deny valid tickets that are not in the whitelist")
	age := fs.Duration("max-code-age", 0, "oldest rotating code accepted (default 30s)")
	skew := fs.Duration("max-code-skew", 0, "how far ahead of the clock a rotating code may be (default 10s)")
	catchupWait := fs.Duration("catchup-wait", 0, "with a broker: how long to wait at start for the centre's catch-up before deciding (default 2s)")
	level := fs.String("log-level", "", "debug, info, warn or error")
	broker := fs.String("broker", "", "MQTT broker linking the gate to the centre: tcp://HOST:PORT or ssl://HOST:PORT (default: none, air-gapped)")
	venue := fs.String("venue", "", "venue id for sync topics (required with --broker)")
	mqttUser := fs.String("username", "", "broker username")
	mqttPass := fs.String("password", "", "broker password (or GATED_MQTT_PASSWORD)")
	tlsCA := fs.String("tls-ca", "", "PEM CAs to verify the broker with (default: system roots)")
	tlsCert := fs.String("tls-cert", "", "client certificate for the broker")
	tlsKey := fs.String("tls-key", "", "key of --tls-cert")
	httpAddr := fs.String("http", "", "status endpoint HOST:PORT for /healthz /metrics /status, e.g. 127.0.0.1:9127 (default: off)")
	hold := fs.Duration("console-hold", 0, "how long the staff console shows a verdict (default 4s)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) > 0 {
		return nil, cli.Usagef("unexpected argument %q", pos[0])
	}
	cfg := &gate.Config{}
	if *cfgPath != "" {
		if cfg, err = gate.LoadConfig(*cfgPath); err != nil {
			return nil, err
		}
	}
	set := cli.Set(fs)
	if set["data"] {
		cfg.Data = *data
	}
	if set["gate"] {
		cfg.Gate = *gateID
	}
	if set["scanner"] {
		cfg.Scanners = scanners
	}
	if set["zone"] {
		cfg.Zones = zones
	}
	if set["output"] {
		cfg.Output = *output
	}
	if set["strict"] {
		cfg.Strict = *strict
	}
	if set["max-code-age"] {
		cfg.MaxCodeAge = *age
	}
	if set["max-code-skew"] {
		cfg.MaxCodeSkew = *skew
	}
	if set["catchup-wait"] {
		cfg.CatchupWait = *catchupWait
	}
	if set["log-level"] {
		cfg.LogLevel = *level
	}
	if set["http"] {
		cfg.HTTP = *httpAddr
	}
	if set["console-hold"] {
		cfg.ConsoleHold = *hold
	}
	for _, f := range []struct {
		name     string
		dst, src *string
	}{{"broker", &cfg.Broker, broker}, {"venue", &cfg.Venue, venue}, {"username", &cfg.MQTTUsername, mqttUser},
		{"password", &cfg.MQTTPassword, mqttPass}, {"tls-ca", &cfg.TLSCA, tlsCA}, {"tls-cert", &cfg.TLSCert, tlsCert},
		{"tls-key", &cfg.TLSKey, tlsKey}} {
		if set[f.name] {
			*f.dst = *f.src
		}
	}
	if cfg.MQTTPassword == "" {
		cfg.MQTTPassword = os.Getenv("GATED_MQTT_PASSWORD")
	}
	return cfg, cfg.Validate()
}

func cmdRun(args []string, io stdio, now func() time.Time) error {
	cfg, err := runConfig(args)
	if err != nil {
		return err
	}
	d := newDaemon(args, cfg, io, now) // console, HTTP, systemd, SIGHUP, the clock: service.go
	log := d.log
	now = d.now // decisions follow the clock; the sync link measures d.wall
	var sources []scanner.Source
	for _, uri := range cfg.Scanners {
		src, err := d.openScanner(uri)
		if err != nil {
			return &gate.ConfigError{Msg: err.Error()}
		}
		sources = append(sources, src)
	}
	store, err := cache.Open(cfg.Data, &cache.Options{Logger: log.With("component", "cache"), MustExist: true})
	if err != nil {
		return err
	}
	defer store.Close()
	// Opening read every page of the file (bbolt rebuilds its freelist);
	// give them back: a gate with a million tickets touches few of them.
	if err := store.ReleasePages(); err != nil {
		log.Warn("release store pages", "err", err)
	}
	st, err := store.State()
	if errors.Is(err, cache.ErrNotProvisioned) {
		return fmt.Errorf("%s holds no bundle yet: run gated provision --data %s BUNDLE (from gatesync export)", cfg.Data, cfg.Data)
	}
	if err != nil {
		return err
	}
	if t := now(); t.Before(st.BundleCreated.Add(-5 * time.Minute)) {
		log.Warn("gate clock is behind the bundle's creation time: validity checks will be wrong; set the clock",
			"clock", t.UTC().Format(time.RFC3339), "bundle_created", st.BundleCreated.Format(time.RFC3339))
	}
	policy := verify.Policy{Event: st.Event, Zones: cfg.Zones, Strict: cfg.Strict,
		MaxCodeAge: cfg.MaxCodeAge, MaxCodeSkew: cfg.MaxCodeSkew}
	v := verify.NewVerifier(policy, st.Trust)
	signals := d.signallers()
	var g *gate.Gate
	var link *gatelink.Link
	if cfg.Broker != "" {
		tc, err := syncTLS(cfg)
		if err != nil {
			return err
		}
		link, err = gatelink.New(store, gatelink.Options{Broker: cfg.Broker, Venue: cfg.Venue, Gate: cfg.Gate,
			Username: cfg.MQTTUsername, Password: cfg.MQTTPassword, TLS: tc, Now: d.wall, Logger: log.With("component", "sync"),
			OnTrust: func(tl *verify.TrustList) {
				d.trustChanged(tl)
				log.Info("trust list rotated", "version", tl.Version, "keys", len(tl.Keys))
			}})
		if err != nil {
			return &gate.ConfigError{Msg: err.Error()}
		}
		signals = append(signals, link) // every decision nudges the uplink
		d.mon.SetSync(syncOnClock{link, d.clock})
		d.clock.SetCentre(link)
	}
	g = gate.New(cfg.Gate, store, v, log, signals...)
	g.SetClock(d.clock.Now)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	defer startRetention(ctx, store, cfg, now, log)() // archives old acked decisions: retention.go
	log.Info("gate running", "event", st.Event, "bundle_version", st.BundleVersion, "scanners", len(sources), "broker", cfg.Broker)
	linkDone := make(chan struct{})
	if link != nil {
		go func() { defer close(linkDone); link.Run(ctx) }()
		// Uses at other gates and revocations made while this gate was down
		// arrive in the catch-up: wait for it, briefly, before deciding.
		start := now()
		if link.WaitCatchup(ctx, cfg.CatchupWait) {
			log.Info("caught up with the centre", "took", now().Sub(start).Round(time.Millisecond))
		} else {
			log.Warn("deciding without the centre's catch-up", "waited", now().Sub(start).Round(time.Millisecond))
		}
	}
	if err := d.run(ctx, g, store, st, policy, sources); err != nil {
		return err
	}
	if link != nil {
		// Sources may end (stdin closed) while entries still wait for the
		// centre: a syncing gate keeps syncing until it is told to stop.
		<-ctx.Done()
		<-linkDone
	}
	log.Info("gate stopped")
	return nil
}

func syncTLS(cfg *gate.Config) (*tls.Config, error) {
	if cfg.TLSCA == "" && cfg.TLSCert == "" {
		return nil, nil // plain tcp://, or TLS with the system roots
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCA != "" {
		b, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, &gate.ConfigError{Msg: "tls_ca: " + err.Error()}
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(b) {
			return nil, &gate.ConfigError{Msg: "tls_ca " + cfg.TLSCA + ": no PEM certificates in it"}
		}
	}
	if cfg.TLSCert != "" {
		kp, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, &gate.ConfigError{Msg: "tls_cert/tls_key: " + err.Error()}
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	return tc, nil
}
