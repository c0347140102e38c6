// Command gatesync is the central companion of gated: it keeps the keys,
// issues and revokes tickets, and exports the signed bundles gates load.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/internal/cli"
	"github.com/gated-dev/gated/qr"
	"github.com/gated-dev/gated/verify"
)

const usage = `usage: gatesync COMMAND [flags]

commands:
  init        --dir DIR                         create a central directory with a root key and an issuer key
  issue       --dir DIR --event EVENT --count N register and sign N tickets; prints one QR payload a line
  revoke      --dir DIR --ticket ID             revoke a ticket
  reissue     --dir DIR --ticket ID             re-issue a ticket with a higher serial (transfer); prints its payload
  rotate-key  --dir DIR                         add a new issuer key; older keys stay live unless --retire-old
  export      --dir DIR --event EVENT --out FILE  write a signed provisioning bundle for a gate
  present     --dir DIR --ticket ID             show a rotating ticket's current code (phone simulator)
  serve       --dir DIR [--config FILE.yaml] [--broker embedded|tcp://HOST:PORT] [--listen 127.0.0.1:8080]
                                                sync with gates over MQTT and serve the HTTP API
  add-gate    --dir DIR --venue V --gate G      create a gate's credentials for the embedded broker
  remove-gate --dir DIR --venue V --gate G      remove a gate and its broker login
  lock-gate   --dir DIR --venue V --gate G      refuse a gate's broker login (and disconnect it); unlock-gate undoes it
  move-books  --dir DIR --to postgres://USER@HOST/DB [--sales FILE]
                                                move the books from bbolt to PostgreSQL, once, with serve stopped

issue, revoke, remove-gate, lock-gate and unlock-gate take --server URL to ask a running serve instead of opening --dir.

Run gatesync COMMAND --help for a command's flags.
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, time.Now)) }

func run(args []string, stdout, stderr io.Writer, now func() time.Time) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return cli.ExitUsage
		}
		return cli.ExitOK
	}
	cmds := map[string]func([]string, io.Writer, func() time.Time) error{
		"init": cmdInit, "issue": cmdIssue, "revoke": cmdRevoke, "reissue": cmdReissue,
		"rotate-key": cmdRotateKey, "export": cmdExport, "present": cmdPresent,
		"serve": cmdServe, "add-gate": cmdAddGate, "move-books": cmdMoveBooks,
		"remove-gate": cmdRemoveGate, "lock-gate": cmdLockGate, "unlock-gate": cmdUnlockGate,
	}
	f, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "gatesync: unknown command %q\n\n%s", args[0], usage)
		return cli.ExitUsage
	}
	err := f(args[1:], stdout, now)
	var ue *cli.UsageError
	switch {
	case err == nil:
		return cli.ExitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stderr, usage)
		return cli.ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "gatesync %s: %v\n", args[0], err)
		return cli.ExitUsage
	default:
		fmt.Fprintf(stderr, "gatesync %s: %v\n", args[0], err)
		return cli.ExitFail
	}
}

func flags(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("gatesync "+name, flag.ContinueOnError)
	dir := fs.String("dir", "", "central data directory (required)")
	return fs, dir
}

func parse(fs *flag.FlagSet, dir *string, args []string) error {
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("unexpected argument %q", pos[0])
	}
	if *dir == "" {
		return cli.Usagef("--dir DIR is required")
	}
	return nil
}

// parseServer is parse for commands that may talk to a server instead of
// opening --dir.
func parseServer(fs *flag.FlagSet, dir, server *string, args []string) error {
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("unexpected argument %q", pos[0])
	}
	if *dir == "" && *server == "" {
		return cli.Usagef("--dir DIR (or --server URL) is required")
	}
	return nil
}

func open(dir string, now func() time.Time) (*centre.Centre, error) { return centre.Open(dir, now) }

func cmdInit(args []string, stdout io.Writer, now func() time.Time) error {
	fs, dir := flags("init")
	if err := parse(fs, dir, args); err != nil {
		return err
	}
	if err := centre.Init(*dir, now); err != nil {
		return err
	}
	pub, err := centre.ReadPublicKey(filepath.Join(*dir, centre.RootPubFile))
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "initialised %s: root key %s (fingerprint %s), issuer key 1\n", *dir, centre.RootKeyFile, verify.Fingerprint(pub))
	return nil
}

func parseTime(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return t, cli.Usagef("--%s %q: use RFC 3339, e.g. 2026-12-31T20:00:00+08:00", name, v)
	}
	return t, nil
}

func cmdIssue(args []string, stdout io.Writer, now func() time.Time) error {
	fs, dir := flags("issue")
	event := fs.String("event", "", "event id (required)")
	count := fs.Int("count", 0, "number of tickets (required)")
	nb := fs.String("not-before", "", "valid from (RFC 3339)")
	na := fs.String("not-after", "", "valid until (RFC 3339)")
	zone := fs.String("zone", "", "zone the tickets admit to (default: any)")
	pngDir := fs.String("png", "", "also write each ticket's QR image as DIR/TICKET.png")
	reentry := fs.Bool("reentry", false, "tickets allow re-entry")
	rotating := fs.Bool("rotating", false, "bind tickets to device keys: gates then take only rotating codes (see present)")
	server, token := serverFlags(fs)
	if err := parseServer(fs, dir, server, args); err != nil {
		return err
	}
	if *event == "" {
		return cli.Usagef("--event EVENT is required")
	}
	if *count < 1 {
		return cli.Usagef("--count N is required and must be at least 1")
	}
	if len(*zone) > verify.MaxZoneLen {
		return cli.Usagef("--zone %q: at most %d characters", *zone, verify.MaxZoneLen)
	}
	notBefore, err := parseTime("not-before", *nb)
	if err != nil {
		return err
	}
	notAfter, err := parseTime("not-after", *na)
	if err != nil {
		return err
	}
	if *pngDir != "" {
		if err := os.MkdirAll(*pngDir, 0o755); err != nil {
			return err
		}
	}
	if *server != "" {
		cl, err := newClient(*server, *token, *dir)
		if err != nil {
			return err
		}
		var ts []centre.IssuedTicket
		if err := cl.post("/api/v1/events/"+url.PathEscape(*event)+"/tickets", centre.IssueBody{Count: *count, NotBefore: notBefore,
			NotAfter: notAfter, Zone: *zone, Reentry: *reentry, Rotating: *rotating}, &ts); err != nil {
			return err
		}
		for _, t := range ts {
			fmt.Fprintln(stdout, t.Code)
			if *pngDir != "" {
				if err := qr.WritePNG(filepath.Join(*pngDir, t.ID.String()+".png"), t.Code, 400); err != nil {
					return err
				}
			}
		}
		return nil
	}
	c, err := open(*dir, now)
	if err != nil {
		return err
	}
	defer c.Close()
	ts, err := c.Issue(centre.IssueRequest{Event: *event, Count: *count, NotBefore: notBefore, NotAfter: notAfter,
		Zone: *zone, Reentry: *reentry, Rotating: *rotating})
	if err != nil {
		return err
	}
	for _, t := range ts {
		code := t.Code()
		if *rotating {
			if code, err = c.Present(t.ID, now(), false); err != nil {
				return err
			}
		}
		fmt.Fprintln(stdout, code)
		if *pngDir != "" {
			if err := qr.WritePNG(filepath.Join(*pngDir, t.ID.String()+".png"), code, 400); err != nil {
				return err
			}
		}
	}
	return nil
}

func ticketFlag(fs *flag.FlagSet) *string {
	return fs.String("ticket", "", "ticket id (24 hex characters; required)")
}

func ticketID(s string) (verify.TicketID, error) {
	if s == "" {
		return verify.TicketID{}, cli.Usagef("--ticket ID is required")
	}
	id, err := verify.ParseTicketID(s)
	if err != nil {
		return id, cli.Usagef("%v", err)
	}
	return id, nil
}

func cmdRevoke(args []string, stdout io.Writer, now func() time.Time) error {
	fs, dir := flags("revoke")
	tk := ticketFlag(fs)
	reason := fs.String("reason", "revoked", "why (refund, stolen, ...)")
	server, token := serverFlags(fs)
	if err := parseServer(fs, dir, server, args); err != nil {
		return err
	}
	id, err := ticketID(*tk)
	if err != nil {
		return err
	}
	if *server != "" {
		cl, err := newClient(*server, *token, *dir)
		if err != nil {
			return err
		}
		var r verify.Revocation
		if err := cl.post("/api/v1/tickets/"+id.String()+"/revoke", centre.RevokeBody{Reason: *reason}, &r); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s at %s (%s); online gates get it now\n", id, r.At.Format(time.RFC3339), r.Reason)
		return nil
	}
	c, err := open(*dir, now)
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Revoke(id, *reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked %s at %s (%s); export a new bundle for air-gapped gates\n", id, r.At.Format(time.RFC3339), r.Reason)
	return nil
}

func cmdReissue(args []string, stdout io.Writer, now func() time.Time) error {
	fs, dir := flags("reissue")
	tk := ticketFlag(fs)
	if err := parse(fs, dir, args); err != nil {
		return err
	}
	id, err := ticketID(*tk)
	if err != nil {
		return err
	}
	c, err := open(*dir, now)
	if err != nil {
		return err
	}
	defer c.Close()
	t, err := c.Reissue(id)
	if err != nil {
		return err
	}
	code := t.Code()
	if len(t.DeviceKey) > 0 {
		if code, err = c.Present(id, now(), false); err != nil {
			return err
		}
	}
	fmt.Fprintln(stdout, code)
	return nil
}

func cmdRotateKey(args []string, stdout io.Writer, now func() time.Time) error {
	fs, dir := flags("rotate-key")
	retire := fs.String("retire-old", "", "older issuer keys stop being valid at this time (RFC 3339); default: they stay live")
	if err := parse(fs, dir, args); err != nil {
		return err
	}
	at, err := parseTime("retire-old", *retire)
	if err != nil {
		return err
	}
	c, err := open(*dir, now)
	if err != nil {
		return err
	}
	defer c.Close()
	kid, err := c.AddIssuerKey(at)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "issuer key %d created; new tickets are signed with it; export new bundles for the gates\n", kid)
	return nil
}

func cmdExport(args []string, stdout io.Writer, now func() time.Time) error {
	fs, dir := flags("export")
	event := fs.String("event", "", "event id (required)")
	out := fs.String("out", "", "bundle file to write (required)")
	if err := parse(fs, dir, args); err != nil {
		return err
	}
	if *event == "" || *out == "" {
		return cli.Usagef("--event EVENT and --out FILE are required")
	}
	c, err := open(*dir, now)
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := c.Export(*event)
	if err != nil {
		return err
	}
	tmp := *out + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s for event %s (root %s)\n", *out, *event, verify.Fingerprint(c.RootPublic()))
	return nil
}

func cmdPresent(args []string, stdout io.Writer, now func() time.Time) error {
	fs, dir := flags("present")
	tk := ticketFlag(fs)
	at := fs.String("at", "", "sign this time instead of now (RFC 3339)")
	short := fs.Bool("short", false, "short form (G3): the gate must have the ticket in its whitelist")
	if err := parse(fs, dir, args); err != nil {
		return err
	}
	id, err := ticketID(*tk)
	if err != nil {
		return err
	}
	t := now()
	if *at != "" {
		if t, err = parseTime("at", *at); err != nil {
			return err
		}
	}
	c, err := open(*dir, now)
	if err != nil {
		return err
	}
	defer c.Close()
	code, err := c.Present(id, t, *short)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, code)
	return nil
}
