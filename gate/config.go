package gate

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is every setting of `gated run`. The zero value, with Data and
// Gate set, is a working gate: stdin scanner, console output, every zone,
// non-strict, default rotating-code window. A config file holds these keys
// in YAML; command-line flags override it.
type Config struct {
	// Data is the gate's data directory (holds gate.db). Required.
	Data string `yaml:"data"`
	// Gate is this gate's id as the centre knows it. Required.
	Gate string `yaml:"gate"`
	// Scanners are scanner URIs; default ["stdin:"].
	Scanners []string `yaml:"scanners"`
	// Output is "console" (default; a line for staff) or "json" (one object a decision).
	Output string `yaml:"output"`
	// Zones this gate admits; empty admits every zone.
	Zones []string `yaml:"zones"`
	// Strict denies valid tickets missing from the whitelist.
	Strict bool `yaml:"strict"`
	// MaxCodeAge is how old a rotating code may be (default 30s).
	MaxCodeAge time.Duration `yaml:"max_code_age"`
	// MaxCodeSkew is how far ahead of the gate's clock a rotating code may be (default 10s).
	MaxCodeSkew time.Duration `yaml:"max_code_skew"`
	// LogLevel is debug, info (default), warn or error.
	LogLevel string `yaml:"log_level"`

	// Broker is the MQTT broker that links the gate to the centre:
	// tcp://HOST:PORT, or ssl://, tls://, mqtts:// for TLS. Empty: no
	// sync; the gate runs air-gapped on its provisioned bundle.
	Broker string `yaml:"broker"`
	// Venue is the venue id in sync topics. Required with Broker.
	Venue string `yaml:"venue"`
	// MQTTUsername and MQTTPassword authenticate at the broker (optional;
	// the password may come from GATED_MQTT_PASSWORD instead).
	MQTTUsername string `yaml:"mqtt_username"`
	MQTTPassword string `yaml:"mqtt_password"`
	// TLSCA is a PEM file of CAs to verify the broker with (default: the
	// system's). TLSCert and TLSKey are a client certificate, if the
	// broker wants one.
	TLSCA   string `yaml:"tls_ca"`
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// CatchupWait is how long a gate with a broker waits at start for the
	// centre's catch-up (whitelist changes, uses at other gates) before it
	// decides (default 2s). It decides at once when the broker cannot be
	// reached.
	CatchupWait time.Duration `yaml:"catchup_wait"`
	// HTTP is the local status endpoint's host:port (/healthz, /metrics,
	// /status), e.g. 127.0.0.1:9127. Empty or "off": none. It has no
	// authentication, so keep it on loopback or a management network.
	HTTP string `yaml:"http"`
	// ConsoleHold is how long the staff console shows a verdict before it
	// returns to READY (default 4s).
	ConsoleHold time.Duration `yaml:"console_hold"`

	// JournalRetention is how long a decision stays in the store's journal
	// once the centre has acked it; older ones move to daily files in
	// DATA/archive (gated journal --archive reads them). A duration such
	// as 30d, 36h or 90m; empty means 30d; 0 keeps every decision in the
	// store. Uses of tickets, the single-use guarantee, go only when their
	// ticket's validity ended longer ago than this.
	JournalRetention string `yaml:"journal_retention"`
	retention        time.Duration
	// ClockTolerance is how far the wall clock may disagree with the
	// gate's reference (the time it was using carried on by the monotonic
	// clock, or the centre's clock) before it counts as stepped and is
	// not trusted (default 2s).
	ClockTolerance time.Duration `yaml:"clock_tolerance"`
	// ClockNTP is where the gate reads whether NTP has synchronised the
	// clock: "kernel" (default; the flag timesyncd and chronyd set, as
	// timedatectl shows it) or "off" (never trust a step on NTP's word).
	ClockNTP string `yaml:"clock_ntp"`
	// ClockFloorFile keeps a lower bound of the time across restarts, so a
	// box that boots with its RTC behind does not decide in the past
	// (default DATA/clock-floor; "off": none).
	ClockFloorFile string `yaml:"clock_floor_file"`
	// MaxFrame is the largest camera frame or image file decoded,
	// WIDTHxHEIGHT (default 4096x4096); larger ones are refused unread.
	MaxFrame string `yaml:"max_frame"`
}

// DefaultJournalRetention is JournalRetention when it is not set.
const DefaultJournalRetention = 30 * 24 * time.Hour

// Retention is JournalRetention as Validate read it (0: keep forever).
func (c *Config) Retention() time.Duration { return c.retention }

func (c *Config) validateRetention() error {
	v := strings.TrimSpace(c.JournalRetention)
	if v == "" {
		c.retention = DefaultJournalRetention
		return nil
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(v, "d"); ok {
		var n int
		if n, err = strconv.Atoi(days); err == nil {
			d = time.Duration(n) * 24 * time.Hour
		}
	} else if v != "0" {
		d, err = time.ParseDuration(v)
	}
	if err != nil || d < 0 || (d > 0 && d < time.Hour) {
		return configErr("journal_retention %q: use a duration of at least 1h such as 30d, 36h or 90m, or 0 to keep every decision in the store", c.JournalRetention)
	}
	c.retention = d
	return nil
}

// ConfigError is a setting a person must fix; commands exit 2 on it.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

func configErr(format string, a ...any) error { return &ConfigError{Msg: fmt.Sprintf(format, a...)} }

// LoadConfig reads a YAML config file. Unknown keys are errors: a misspelt
// setting silently ignored at a gate is worse than a refusal to start.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, configErr("config: %v", err)
	}
	return ParseConfig(b, path)
}

// ParseConfig reads YAML config text; name labels error messages.
func ParseConfig(b []byte, path string) (*Config, error) {
	var c Config
	d := yaml.NewDecoder(bytes.NewReader(b))
	d.KnownFields(true)
	if err := d.Decode(&c); err != nil && !errors.Is(err, io.EOF) /* an empty file is an empty config */ {
		return nil, configErr("config %s: %v", path, err)
	}
	return &c, nil
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Validate fills defaults and checks every setting, naming what to fix.
func (c *Config) Validate() error {
	if c.Data == "" {
		return configErr("no data directory: pass --data DIR or set data: in the config")
	}
	if c.Gate == "" {
		return configErr("no gate id: pass --gate GATE or set gate: in the config")
	}
	if !idPattern.MatchString(c.Gate) {
		return configErr("gate id %q: use 1-64 letters, digits, '.', '_' or '-'", c.Gate)
	}
	if len(c.Scanners) == 0 {
		c.Scanners = []string{"stdin:"}
	}
	if err := oneOf(&c.Output, "output", "console", "json"); err != nil {
		return err
	}
	for _, z := range c.Zones {
		if !idPattern.MatchString(z) {
			return configErr("zone %q: use letters, digits, '.', '_' or '-'", z)
		}
	}
	if c.CatchupWait == 0 {
		c.CatchupWait = 2 * time.Second
	}
	for name, d := range map[string]*time.Duration{"max_code_age": &c.MaxCodeAge, "max_code_skew": &c.MaxCodeSkew, "catchup_wait": &c.CatchupWait} {
		if *d < 0 || *d > 10*time.Minute {
			return configErr("%s %s: use a duration between 1s and 10m", name, *d)
		}
	}
	if err := c.validateSync(); err != nil {
		return err
	}
	if err := c.validateOps(); err != nil {
		return err
	}
	if err := c.validateRetention(); err != nil {
		return err
	}
	if err := c.validateClock(); err != nil {
		return err
	}
	switch c.LogLevel {
	case "":
		c.LogLevel = "info"
	case "debug", "info", "warn", "error":
	default:
		return configErr("log_level %q: use debug, info, warn or error", c.LogLevel)
	}
	return nil
}

func (c *Config) validateSync() error {
	if c.Broker == "" {
		if c.Venue != "" || c.MQTTUsername != "" || c.TLSCA != "" || c.TLSCert != "" {
			return configErr("venue, MQTT credentials or TLS files given without a broker: pass --broker tcp://HOST:PORT or set broker: in the config")
		}
		return nil
	}
	scheme, _, ok := strings.Cut(c.Broker, "://")
	switch {
	case !ok:
		return configErr("broker %q: use a URL like tcp://HOST:1883 or ssl://HOST:8883", c.Broker)
	case scheme != "tcp" && scheme != "ssl" && scheme != "tls" && scheme != "mqtts" && scheme != "ws" && scheme != "wss":
		return configErr("broker %q: scheme %q; use tcp, ssl, tls, mqtts, ws or wss", c.Broker, scheme)
	case c.Venue == "":
		return configErr("a broker needs a venue: pass --venue VENUE or set venue: in the config")
	case !idPattern.MatchString(c.Venue):
		return configErr("venue %q: use 1-64 letters, digits, '.', '_' or '-'", c.Venue)
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return configErr("tls_cert and tls_key go together: give both or neither")
	}
	for _, f := range []string{c.TLSCA, c.TLSCert, c.TLSKey} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return configErr("TLS file: %v", err)
		}
	}
	return nil
}

// oneOf fills an empty *v with the first of allowed (the default) and
// refuses anything else not among them.
func oneOf(v *string, key string, allowed ...string) error {
	if *v == "" {
		*v = allowed[0]
	}
	if !slices.Contains(allowed, *v) {
		return configErr("%s %q: use %s or %s", key, *v, strings.Join(allowed[:len(allowed)-1], ", "), allowed[len(allowed)-1])
	}
	return nil
}

// HTTPAddr is the status endpoint's address, "" when it is off.
func (c *Config) HTTPAddr() string {
	if c.HTTP == "off" {
		return ""
	}
	return c.HTTP
}

func (c *Config) validateOps() error {
	if a := c.HTTPAddr(); a != "" {
		host, port, err := net.SplitHostPort(a)
		if err != nil || port == "" {
			return configErr("http %q: use HOST:PORT such as 127.0.0.1:9127, or off", c.HTTP)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return configErr("http %q: port %q is not a number from 0 to 65535", c.HTTP, port)
		}
		if host != "" && host != "localhost" && net.ParseIP(host) == nil {
			return configErr("http %q: host %q: use an IP address of this box (127.0.0.1 for local only) or localhost", c.HTTP, host)
		}
	}
	if c.ConsoleHold == 0 {
		c.ConsoleHold = 4 * time.Second
	}
	if c.ConsoleHold < 100*time.Millisecond || c.ConsoleHold > time.Hour {
		return configErr("console_hold %s: use a duration between 100ms and 1h", c.ConsoleHold)
	}
	return nil
}

func (c *Config) validateClock() error {
	if c.ClockTolerance == 0 {
		c.ClockTolerance = 2 * time.Second
	}
	if c.ClockTolerance < 100*time.Millisecond || c.ClockTolerance > time.Minute {
		return configErr("clock_tolerance %s: use a duration between 100ms and 1m", c.ClockTolerance)
	}
	if err := oneOf(&c.ClockNTP, "clock_ntp", "kernel", "off"); err != nil {
		return err
	}
	if c.ClockFloorFile == "" {
		c.ClockFloorFile = filepath.Join(c.Data, "clock-floor")
	}
	if c.MaxFrame == "" {
		c.MaxFrame = "4096x4096"
	}
	if _, err := c.MaxFrameSize(); err != nil {
		return err
	}
	return nil
}

// FloorFile is the clock floor file's path, "" when it is off.
func (c *Config) FloorFile() string {
	if c.ClockFloorFile == "off" {
		return ""
	}
	return c.ClockFloorFile
}

// MaxFrameSize is MaxFrame as a width and height.
func (c *Config) MaxFrameSize() (image.Point, error) {
	ws, hs, ok := strings.Cut(c.MaxFrame, "x")
	w, werr := strconv.Atoi(ws)
	h, herr := strconv.Atoi(hs)
	if !ok || werr != nil || herr != nil || w < 16 || h < 16 || w > 16384 || h > 16384 {
		return image.Point{}, configErr("max_frame %q: use WIDTHxHEIGHT between 16x16 and 16384x16384, such as 4096x4096", c.MaxFrame)
	}
	return image.Pt(w, h), nil
}
