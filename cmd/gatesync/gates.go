package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/internal/cli"
)

// remove-gate, lock-gate, unlock-gate: the operator's hold on gate logins,
// on central.db (--dir, serve stopped) or through a running serve
// (--server).

func cmdRemoveGate(args []string, stdout io.Writer, now func() time.Time) error {
	return gateCommand("remove-gate", http.MethodDelete, "", args, stdout, now,
		func(c *centre.Centre, venue, gate string) error { return c.RemoveGate(venue, gate) },
		"gate %s at venue %s removed: its broker login is gone and it is disconnected; its entries stay in the books / 闸机已删除\n")
}

func cmdLockGate(args []string, stdout io.Writer, now func() time.Time) error {
	return gateCommand("lock-gate", http.MethodPost, "/lock", args, stdout, now,
		func(c *centre.Centre, venue, gate string) error { return c.LockGate(venue, gate, true) },
		"gate %s at venue %s locked: the embedded broker refuses its login and a running serve disconnects it at once (Mosquitto: deploy/mosquitto/lock-gate.sh); unlock-gate lets it in again / 闸机已锁定\n")
}

func cmdUnlockGate(args []string, stdout io.Writer, now func() time.Time) error {
	return gateCommand("unlock-gate", http.MethodPost, "/unlock", args, stdout, now,
		func(c *centre.Centre, venue, gate string) error { return c.LockGate(venue, gate, false) },
		"gate %s at venue %s unlocked: it may log in again / 闸机已解锁\n")
}

func gateCommand(name, method, suffix string, args []string, stdout io.Writer, now func() time.Time,
	local func(c *centre.Centre, venue, gate string) error, done string) error {
	fs, dir := flags(name)
	venue := fs.String("venue", "", "venue id (required)")
	gate := fs.String("gate", "", "gate id (required)")
	server, token := serverFlags(fs)
	if err := parseServer(fs, dir, server, args); err != nil {
		return err
	}
	if *venue == "" || *gate == "" {
		return cli.Usagef("--venue VENUE and --gate GATE are required")
	}
	if *server != "" {
		cl, err := newClient(*server, *token, *dir)
		if err != nil {
			return err
		}
		var ch centre.GateChange
		if err := cl.call(method, "/api/v1/gates/"+url.PathEscape(*venue)+"/"+url.PathEscape(*gate)+suffix, struct{}{}, &ch); err != nil {
			return err
		}
	} else {
		c, err := open(*dir, now)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := local(c, *venue, *gate); err != nil {
			if errors.Is(err, centre.ErrNoGate) {
				return cli.Usagef("%v", err)
			}
			return err
		}
	}
	fmt.Fprintf(stdout, done, *gate, *venue)
	return nil
}
