package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os/signal"
	"syscall"
	"time"

	"github.com/gated-dev/gated/cache"
	"github.com/gated-dev/gated/gate"
	"github.com/gated-dev/gated/internal/cli"
	"github.com/gated-dev/gated/scanner"
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
	level := fs.String("log-level", "", "debug, info, warn or error")
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
	if set["log-level"] {
		cfg.LogLevel = *level
	}
	return cfg, cfg.Validate()
}

func cmdRun(args []string, io stdio, now func() time.Time) error {
	cfg, err := runConfig(args)
	if err != nil {
		return err
	}
	log := cli.Logger(io.errOut, cfg.LogLevel).With("component", "gated", "gate", cfg.Gate)
	var sources []scanner.Source
	for _, uri := range cfg.Scanners {
		src, err := scanner.Open(uri, scanner.Env{Stdin: io.in, Now: now, Log: log})
		if err != nil {
			return &gate.ConfigError{Msg: err.Error()}
		}
		sources = append(sources, src)
	}
	store, err := cache.Open(cfg.Data, &cache.Options{Logger: log.With("component", "cache")})
	if err != nil {
		return err
	}
	defer store.Close()
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
	v := verify.NewVerifier(verify.Policy{Event: st.Event, Zones: cfg.Zones, Strict: cfg.Strict,
		MaxCodeAge: cfg.MaxCodeAge, MaxCodeSkew: cfg.MaxCodeSkew}, st.Trust)
	var out gate.Signaller = gate.NewConsoleLines(io.out)
	if cfg.Output == "json" {
		out = gate.NewJSONLines(io.out)
	}
	g := gate.New(cfg.Gate, store, v, log, out)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Info("gate running", "event", st.Event, "bundle_version", st.BundleVersion, "scanners", len(sources))
	g.Run(ctx, sources)
	log.Info("gate stopped")
	return nil
}
