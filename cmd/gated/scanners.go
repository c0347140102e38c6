package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gated-dev/gated/gate/scanner"
	"github.com/gated-dev/gated/internal/cli"
	"go.bug.st/serial/enumerator"
)

func init() { commands["scanners"] = cmdScanners }

// cmdScanners lists the scanner models gated knows and the devices
// present, with the model each device matches and the --scanner URI to
// use for it.
func cmdScanners(args []string, io stdio, _ func() time.Time) error {
	fs := flag.NewFlagSet("gated scanners", flag.ContinueOnError)
	modelsDir := fs.String("models", "", "also load the model files (*.yaml) in this directory")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("unexpected argument %q (usage: gated scanners [--models DIR])", pos[0])
	}
	models, err := scanner.LoadModels(*modelsDir)
	if err != nil {
		return cli.Usagef("%v", err)
	}
	fmt.Fprintln(io.out, "MODELS")
	w := tabwriter.NewWriter(io.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "  name\tdevice\tmode\tUSB ids (mode)")
	for _, name := range models.Names() {
		md := models[name]
		var ids []string
		for _, u := range md.USB {
			ids = append(ids, fmt.Sprintf("%s:%s (%s)", u.VID, u.PID, u.Mode))
		}
		fmt.Fprintf(w, "  %s\t%s %s\t%s/%s\t%s\n", name, md.Vendor, md.Product, md.Transport, md.Framing.Protocol, strings.Join(ids, ", "))
	}
	w.Flush()

	fmt.Fprintln(io.out, "\nSERIAL PORTS")
	ports, err := enumerator.GetDetailedPortsList()
	if err != nil {
		fmt.Fprintf(io.out, "  cannot list serial ports: %v\n", err)
	}
	w = tabwriter.NewWriter(io.out, 0, 4, 2, ' ', 0)
	if len(ports) == 0 && err == nil {
		fmt.Fprintln(w, "  none")
	}
	for _, p := range ports {
		if !p.IsUSB {
			fmt.Fprintf(w, "  %s\tnot USB\t\n", p.Name)
			continue
		}
		fmt.Fprintf(w, "  %s\t%s:%s %s\t%s\n", p.Name, strings.ToLower(p.VID), strings.ToLower(p.PID), p.Product,
			matches(models, p.VID, p.PID, func(m scanner.ModelMatch) string {
				return fmt.Sprintf("serial:%s?model=%s", p.Name, m.Model.Name)
			}))
	}
	w.Flush()

	fmt.Fprintln(io.out, "\nUSB HID DEVICES")
	bus := scanner.DefaultHIDBus()
	if bus == nil {
		fmt.Fprintf(io.out, "  %v\n", scanner.ErrHIDUnavailable)
		return nil
	}
	hids, err := bus.Enumerate(0, 0)
	if err != nil {
		fmt.Fprintf(io.out, "  cannot list HID devices: %v\n", err)
		return nil
	}
	w = tabwriter.NewWriter(io.out, 0, 4, 2, ' ', 0)
	if len(hids) == 0 {
		fmt.Fprintln(w, "  none (or no permission to see them: run as root, or install systemd/60-gated-scanners.rules)")
	}
	for _, h := range hids {
		vid, pid := fmt.Sprintf("%04x", h.VID), fmt.Sprintf("%04x", h.PID)
		fmt.Fprintf(w, "  %s\t%s:%s if %d %s %s\t%s\n", h.Path, vid, pid, h.Interface, h.Manufacturer, h.Product,
			matches(models, vid, pid, func(m scanner.ModelMatch) string {
				if m.Mode == "serial" {
					return ""
				}
				return fmt.Sprintf("hid:%s:%s?model=%s&mode=%s", vid, pid, m.Model.Name, m.Mode)
			}))
	}
	return w.Flush()
}

// matches describes the models a device's ids match, with the URI for each.
func matches(models scanner.Models, vid, pid string, uri func(scanner.ModelMatch) string) string {
	v, err1 := strconv.ParseUint(vid, 16, 16)
	p, err2 := strconv.ParseUint(pid, 16, 16)
	if err1 != nil || err2 != nil {
		return "no model (no USB ids)"
	}
	var out []string
	for _, m := range models.Match(uint16(v), uint16(p)) {
		if u := uri(m); u != "" {
			out = append(out, fmt.Sprintf("%s (%s mode): --scanner '%s'", m.Model.Name, m.Mode, u))
		}
	}
	if len(out) == 0 {
		return "no known model"
	}
	return strings.Join(out, "; ")
}
