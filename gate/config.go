package gate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
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
	switch c.Output {
	case "":
		c.Output = "console"
	case "console", "json":
	default:
		return configErr("output %q: use console or json", c.Output)
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
