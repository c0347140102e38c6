package main

// gated doctor: checks what a gate needs to work and says, for each
// problem, what to do. Meant for the operator at the box, and for scripts:
// it exits 1 when any check fails (warnings do not).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gated-dev/gated/gate"
	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/gate/scanner"
	"github.com/gated-dev/gated/internal/cli"
	"golang.org/x/sys/unix"
)

func init() { commands["doctor"] = cmdDoctor }

// defaultConfigPath is the packaged config; doctor reads it when no
// --config is given and it exists, as the unit's gated run does.
const defaultConfigPath = "/etc/gated/gated.yaml"

type checkLevel int

const (
	checkOK checkLevel = iota
	checkWarn
	checkFail
	checkSkip
)

func (l checkLevel) String() string {
	return [...]string{"ok", "WARN", "FAIL", "skip"}[l]
}

// check is one line of the report: what was checked, what was found, and
// for anything not ok, what to do.
type check struct {
	level      checkLevel
	name, what string
	fix        string
}

// doctorEnv is what the checks read of the machine, injectable so tests
// point it at fixtures (node_exporter's --path.sysfs habit).
type doctorEnv struct {
	now   func() time.Time
	sysfs string // for USB devices
	dial  func(ctx context.Context, network, addr string) (net.Conn, error)
}

func cmdDoctor(args []string, io stdio, now func() time.Time) error {
	env := doctorEnv{now: now, sysfs: "/sys", dial: (&net.Dialer{}).DialContext}
	var runArgs []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--help" || a == "-h":
			fmt.Fprint(io.errOut, "usage: gated doctor [--config FILE] [gated run flags] [--sysfs DIR]\n\n"+
				"Checks the config, the store, the trust list, the clock, the scanners and the broker,\n"+
				"and says what to do about each problem. Exits 1 when a check fails.\n"+
				"Without --config it reads "+defaultConfigPath+" if present.\n")
			return nil
		case a == "--sysfs" || a == "-sysfs":
			if i+1 >= len(args) {
				return cli.Usagef("--sysfs needs a directory")
			}
			env.sysfs = args[i+1]
			i++
		case strings.HasPrefix(a, "--sysfs="):
			env.sysfs = strings.TrimPrefix(a, "--sysfs=")
		default:
			runArgs = append(runArgs, a)
		}
	}
	if !hasFlag(runArgs, "config") {
		if _, err := os.Stat(defaultConfigPath); err == nil {
			runArgs = append([]string{"--config", defaultConfigPath}, runArgs...)
		}
	}
	checks, err := doctor(runArgs, env, io)
	if err != nil {
		return err
	}
	failed := 0
	var cause error
	for _, c := range checks {
		if c.level == checkFail && c.name == "store" && strings.Contains(c.what, cache.ErrDamaged.Error()) {
			cause = cache.ErrDamaged // exit 3, as every other command on this store
		}
		fmt.Fprintf(io.out, "%-5s %-12s %s\n", c.level, c.name, c.what)
		if c.fix != "" && c.level != checkOK {
			fmt.Fprintf(io.out, "      %-12s → %s\n", "", c.fix)
		}
		if c.level == checkFail {
			failed++
		}
	}
	if failed > 0 && cause != nil {
		return fmt.Errorf("%d check(s) failed: %w", failed, cause)
	}
	if failed > 0 {
		return fmt.Errorf("%d check(s) failed", failed)
	}
	fmt.Fprintln(io.out, "all checks passed")
	return nil
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// doctor runs the checks; its error is a usage error (exit 2), while a
// config that does not validate is a failed check like any other.
func doctor(args []string, env doctorEnv, io stdio) ([]check, error) {
	cfg, err := runConfig(args)
	var ue *cli.UsageError
	if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
		return nil, err
	}
	if err != nil {
		return []check{{checkFail, "config", err.Error(), "fix the setting named, then run gated doctor again"}}, nil
	}
	out := []check{{checkOK, "config", fmt.Sprintf("gate %s, data %s, %d scanner(s), output %s", cfg.Gate, cfg.Data,
		len(cfg.Scanners), cfg.Output), ""}}
	out = append(out, checkStore(cfg, env)...)
	for _, uri := range cfg.Scanners {
		out = append(out, checkScanner(uri, env, io))
	}
	out = append(out, checkBroker(cfg, env))
	if c, ok := checkRunning(cfg, env); ok {
		out = append(out, c)
	}
	return out, nil
}

func salvageFix(data string) string {
	return "stop gated, keep the file, then: gated salvage --data " + data + " --out salvage.jsonl; " +
		"provision a fresh directory and gated salvage --import salvage.jsonl --data NEWDIR " +
		"(存储已损坏：导出记录后在新目录重新配置并导入)"
}

func checkStore(cfg *gate.Config, env doctorEnv) []check {
	if _, err := os.Stat(filepath.Join(cfg.Data, cache.FileName)); errors.Is(err, os.ErrNotExist) {
		return []check{{checkFail, "store", "no store in " + cfg.Data,
			"provision the gate: gated provision --data " + cfg.Data + " BUNDLE (from gatesync export)"}}
	}
	store, err := cache.Open(cfg.Data, &cache.Options{Timeout: 500 * time.Millisecond, MustExist: true})
	if errors.Is(err, cache.ErrDamaged) {
		return []check{{checkFail, "store", err.Error(), salvageFix(cfg.Data)}}
	}
	if errors.Is(err, cache.ErrLocked) {
		return []check{{checkOK, "store", cfg.Data + " is open in a running gated (store, trust and clock checks need it stopped, or see /status)", ""}}
	}
	if err != nil {
		return []check{{checkFail, "store", err.Error(),
			"check that " + cfg.Data + " is on a working disk and owned by the user gated runs as (chown -R gated:gated " + cfg.Data + ")"}}
	}
	defer store.Close()
	if err := store.Check(); err != nil {
		return []check{{checkFail, "store", err.Error(), salvageFix(cfg.Data)}}
	}
	st, err := store.State()
	if errors.Is(err, cache.ErrNotProvisioned) {
		return []check{{checkFail, "store", "no bundle loaded", "gated provision --data " + cfg.Data + " BUNDLE (from gatesync export)"}}
	}
	if err != nil {
		return []check{{checkFail, "store", err.Error(), "the stored trust list does not verify: provision a fresh bundle from gatesync export"}}
	}
	stats, err := store.Stats()
	if err != nil {
		return []check{{checkFail, "store", err.Error(), "the store cannot be read: copy " + cfg.Data + " aside and call support"}}
	}
	out := []check{{checkOK, "store", fmt.Sprintf("event %s, bundle v%d, %d tickets, %d revocations, %d decisions, %d not yet synced",
		st.Event, st.BundleVersion, stats.Tickets, stats.Revocations, stats.Journal, stats.Outbox), ""}}
	now := env.now()

	// Trust list: an issuer key must be valid now for this event, and
	// warn a week ahead of the last one expiring.
	var live, soon []string
	for _, k := range st.Trust.Keys {
		if !k.Covers(st.Event) {
			continue
		}
		if k.ValidAt(now) {
			live = append(live, fmt.Sprint(k.KeyID))
			if !k.NotAfter.IsZero() && k.NotAfter.Sub(now) < 7*24*time.Hour {
				soon = append(soon, fmt.Sprintf("key %d expires %s", k.KeyID, k.NotAfter.Format(time.RFC3339)))
			}
		}
	}
	switch {
	case len(live) == 0:
		out = append(out, check{checkFail, "trust list", fmt.Sprintf("no issuer key for event %s is valid now (%d keys in list v%d)",
			st.Event, len(st.Trust.Keys), st.Trust.Version),
			"every ticket will be denied: at the centre run gatesync rotate-key, then gatesync export and gated provision (or let sync deliver it); check the clock too"})
	case len(soon) == len(live):
		out = append(out, check{checkWarn, "trust list", strings.Join(soon, "; "),
			"roll a new key before then: gatesync rotate-key at the centre, then re-export or sync"})
	default:
		out = append(out, check{checkOK, "trust list", fmt.Sprintf("list v%d, issuer keys valid now: %s", st.Trust.Version, strings.Join(live, ", ")), ""})
	}

	// Clock: validity windows and rotating codes depend on it.
	switch {
	case now.Year() < 2024:
		out = append(out, check{checkFail, "clock", "the clock says " + now.UTC().Format(time.RFC3339),
			"set the time: timedatectl set-ntp true, or timedatectl set-time 'YYYY-MM-DD HH:MM:SS'; fit an RTC battery if it resets at power-up"})
	case now.Before(st.BundleCreated.Add(-5 * time.Minute)):
		out = append(out, check{checkFail, "clock", fmt.Sprintf("the clock (%s) is behind the bundle's creation (%s)",
			now.UTC().Format(time.RFC3339), st.BundleCreated.Format(time.RFC3339)),
			"validity checks will be wrong: set the time (timedatectl set-ntp true)"})
	default:
		out = append(out, check{checkOK, "clock", now.UTC().Format(time.RFC3339) + " (after the bundle's creation)", ""})
	}
	if age := now.Sub(st.BundleCreated); age > 14*24*time.Hour {
		out = append(out, check{checkWarn, "bundle", fmt.Sprintf("the whitelist is %d days old", int(age.Hours()/24)),
			"revocations and transfers since then are unknown here: connect sync (--broker) or provision a fresh export"})
	}
	return out
}

func checkScanner(uri string, env doctorEnv, io stdio) check {
	name := "scanner"
	if _, err := scanner.Open(uri, scanner.Env{Stdin: io.in, Now: env.now}); err != nil {
		return check{checkFail, name, err.Error(), "fix the scanner URI in the config (see gated --help and firmware-configs/)"}
	}
	u, _ := url.Parse(uri)
	where := u.Opaque
	if where == "" {
		where = u.Path
	}
	switch strings.ToLower(u.Scheme) {
	case "stdin":
		return check{checkOK, name, "stdin: reads codes from standard input (keyboard-wedge or tests)", ""}
	case "serial", "camera":
		return checkDevice(name, uri, where)
	case "dir":
		if fi, err := os.Stat(where); err != nil || !fi.IsDir() {
			return check{checkFail, name, uri + ": directory missing", "create " + where + " or fix the URI"}
		}
		return check{checkOK, name, uri + ": directory present", ""}
	case "hid":
		vid, pid, ok := strings.Cut(where, ":")
		if !ok {
			return check{checkSkip, name, uri + ": USB ids come from the model; presence not checked", ""}
		}
		if usbPresent(env.sysfs, vid, pid) {
			return check{checkOK, name, uri + ": USB device present", ""}
		}
		return check{checkFail, name, uri + ": no USB device " + vid + ":" + pid,
			"plug the scanner in (lsusb lists it); if it shows other ids, it is in another USB mode: scan its mode barcode from firmware-configs/"}
	}
	return check{checkSkip, name, uri + ": not checked (network source)", ""}
}

func checkDevice(name, uri, path string) check {
	fi, err := os.Stat(path)
	if err != nil {
		return check{checkFail, name, uri + ": " + path + " is not there",
			"plug the scanner in (gated scanners lists what is there); prefer the stable names the gated udev rules make, /dev/gated-scanner-VENDOR"}
	}
	if fi.Mode()&os.ModeCharDevice == 0 {
		return check{checkWarn, name, uri + ": " + path + " is not a character device", "point the URI at the device node"}
	}
	if err := unix.Access(path, unix.R_OK|unix.W_OK); err != nil {
		return check{checkFail, name, uri + ": no read/write access to " + path + ": " + err.Error(),
			"install the gated udev rules (/lib/udev/rules.d/60-gated-scanners.rules) and replug, or add the gated user to the device's group (dialout for serial, video for cameras)"}
	}
	return check{checkOK, name, uri + ": device present and accessible", ""}
}

// usbPresent looks for a USB device by ids in sysfs.
func usbPresent(sysfs, vid, pid string) bool {
	devs, _ := filepath.Glob(filepath.Join(sysfs, "bus", "usb", "devices", "*", "idVendor"))
	for _, v := range devs {
		b, err := os.ReadFile(v)
		if err != nil || !strings.EqualFold(strings.TrimSpace(string(b)), vid) {
			continue
		}
		p, err := os.ReadFile(filepath.Join(filepath.Dir(v), "idProduct"))
		if err == nil && strings.EqualFold(strings.TrimSpace(string(p)), pid) {
			return true
		}
	}
	return false
}

func checkBroker(cfg *gate.Config, env doctorEnv) check {
	if cfg.Broker == "" {
		return check{checkOK, "broker", "none configured: the gate runs standalone (decisions wait in the outbox)", ""}
	}
	u, err := url.Parse(cfg.Broker)
	if err != nil || u.Host == "" {
		return check{checkFail, "broker", fmt.Sprintf("broker %q is not a URL", cfg.Broker), "use tcp://HOST:1883 or ssl://HOST:8883"}
	}
	host := u.Host
	if u.Port() == "" {
		port := "1883"
		if u.Scheme != "tcp" && u.Scheme != "ws" {
			port = "8883"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := env.dial(ctx, "tcp", host)
	if err != nil {
		return check{checkFail, "broker", "cannot reach " + host + ": " + err.Error(),
			"check the network, the broker address and firewalls; the gate still decides offline, and syncs when the broker is back"}
	}
	c.Close()
	return check{checkOK, "broker", host + " accepts connections", ""}
}

// checkRunning asks a running gated's /healthz, when one is configured.
func checkRunning(cfg *gate.Config, env doctorEnv) (check, bool) {
	addr := cfg.HTTPAddr()
	if addr == "" || strings.HasSuffix(addr, ":0") {
		return check{}, false
	}
	host, port, _ := net.SplitHostPort(addr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: env.dial}}
	r, err := client.Get("http://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		return check{checkWarn, "daemon", "no gated answers on " + addr,
			"start it: systemctl start gated; see journalctl -u gated"}, true
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1024))
	if r.StatusCode != http.StatusOK {
		return check{checkFail, "daemon", "running gated is " + strings.TrimSpace(string(b)),
			"see its status: curl http://" + addr + "/status; journalctl -u gated"}, true
	}
	return check{checkOK, "daemon", "running gated on " + addr + " is ready", ""}, true
}
