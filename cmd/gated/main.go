// Command gated is the gate daemon: it reads ticket codes from scanners,
// decides ADMIT or DENY offline against its store, records every decision
// durably, then signals it.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/gated-dev/gated/gate"
	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/internal/cli"
	"github.com/gated-dev/gated/verify"
)

const usage = `usage: gated COMMAND [flags]

commands:
  run        --data DIR --gate GATE [--scanner URI]... [--output console|json] [--config FILE]
             [--http 127.0.0.1:9127] [--console-hold 4s] [--broker tcp://HOST:PORT --venue V]
             decide scans until input ends or SIGTERM; SIGHUP reloads the config
  doctor     [--config FILE] [run flags] [--sysfs DIR]  check the gate and say what to fix
  provision  --data DIR FILE   load a signed bundle from gatesync export
  journal    --data DIR [--archive]  print every decision, one JSON object a line
             (--archive: the archived ones first, from DIR/archive)
  compact    --data DIR        rewrite the store without its free space (gated must be stopped)
  status     --data DIR        print what the gate holds
  salvage    --data DIR --out FILE | --import FILE --data NEWDIR
             copy what can be read out of a damaged store; carry it into a fresh one
  scanners   [--models DIR]    list known scanner models, the devices present and which model each matches

Run gated COMMAND --help for a command's flags.

exit codes: 0 ok, 1 failed, 2 bad flags or config, 3 the store is damaged (run gated salvage)
`

// command is one subcommand. Commands in other files add themselves to
// commands in an init function.
type command func(args []string, io stdio, now func() time.Time) error

var commands = map[string]command{
	"run": cmdRun, "provision": cmdProvision, "journal": cmdJournal, "status": cmdStatus,
}

type stdio struct {
	in          io.Reader
	out, errOut io.Writer
}

func main() {
	os.Exit(run(os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr}, time.Now))
}

func run(args []string, io stdio, now func() time.Time) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(io.errOut, usage)
		if len(args) == 0 {
			return cli.ExitUsage
		}
		return cli.ExitOK
	}
	f, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(io.errOut, "gated: unknown command %q\n\n%s", args[0], usage)
		return cli.ExitUsage
	}
	err := f(args[1:], io, now)
	var ue *cli.UsageError
	var ce *gate.ConfigError
	switch {
	case err == nil:
		return cli.ExitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(io.errOut, usage)
		return cli.ExitOK
	case errors.As(err, &ue), errors.As(err, &ce):
		fmt.Fprintf(io.errOut, "gated %s: %v\n", args[0], err)
		return cli.ExitUsage
	case errors.Is(err, cache.ErrDamaged):
		fmt.Fprintf(io.errOut, "gated %s: %v\n", args[0], err)
		return exitDamaged
	default:
		fmt.Fprintf(io.errOut, "gated %s: %v\n", args[0], err)
		return cli.ExitFail
	}
}

// exitDamaged is the exit code for a damaged store (cache.ErrDamaged), so
// scripts and systemd tell it from bad flags (2) and other failures (1).
const exitDamaged = 3

// openExisting opens the store of a provisioned gate: every command but
// provision refuses to create one.
func openExisting(data string) (*cache.Store, error) {
	return cache.Open(data, &cache.Options{MustExist: true})
}

func dataOnly(name string, args []string) (string, []string, error) {
	fs := flag.NewFlagSet("gated "+name, flag.ContinueOnError)
	data := fs.String("data", "", "gate data directory (required)")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return "", nil, err
	}
	if *data == "" {
		return "", nil, cli.Usagef("--data DIR is required")
	}
	return *data, pos, nil
}

func cmdProvision(args []string, io stdio, _ func() time.Time) error {
	data, pos, err := dataOnly("provision", args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return cli.Usagef("give one bundle file: gated provision --data DIR FILE")
	}
	b, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	s, err := cache.Open(data, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	r, err := s.Provision(b)
	if err != nil {
		return fmt.Errorf("%s refused: %w", pos[0], err)
	}
	st, err := s.State()
	if err != nil {
		return err
	}
	if r.FirstRoot {
		fmt.Fprintf(io.out, "pinned root key %s (compare it with `gatesync init`'s output)\n", verify.Fingerprint(st.Root))
	}
	fmt.Fprintf(io.out, "provisioned event %s: bundle version %d, %d tickets, %d revocations, %d issuer keys\n",
		r.Event, r.Version, r.Tickets, r.Revocations, len(st.Trust.Keys))
	return nil
}

func cmdJournal(args []string, io stdio, _ func() time.Time) error {
	fs := flag.NewFlagSet("gated journal", flag.ContinueOnError)
	dataFlag := fs.String("data", "", "gate data directory (required)")
	archived := fs.Bool("archive", false, "print the archived decisions (DATA/archive) before the store's")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	data := *dataFlag
	if data == "" {
		return cli.Usagef("--data DIR is required")
	}
	if len(pos) > 0 {
		return cli.Usagef("unexpected argument %q", pos[0])
	}
	s, err := openExisting(data)
	if err != nil {
		return err
	}
	defer s.Close()
	return printJournal(s, data, *archived, io.out)
}

func cmdStatus(args []string, io stdio, _ func() time.Time) error {
	data, _, err := dataOnly("status", args)
	if err != nil {
		return err
	}
	s, err := openExisting(data)
	if err != nil {
		return err
	}
	defer s.Close()
	out := map[string]any{}
	if st, err := s.State(); err == nil {
		out["event"], out["bundle_version"], out["bundle_created"] = st.Event, st.BundleVersion, st.BundleCreated
		out["root"], out["issuer_keys"] = verify.Fingerprint(st.Root), len(st.Trust.Keys)
	} else if !errors.Is(err, cache.ErrNotProvisioned) {
		return err
	}
	stats, err := s.Stats()
	if err != nil {
		return err
	}
	out["tickets"], out["revocations"], out["used"], out["journal"], out["outbox"], out["last_seq"] =
		stats.Tickets, stats.Revocations, stats.Used, stats.Journal, stats.Outbox, stats.LastSeq
	enc := json.NewEncoder(io.out)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
