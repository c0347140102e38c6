package gate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
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
	for name, d := range map[string]*time.Duration{"max_code_age": &c.MaxCodeAge, "max_code_skew": &c.MaxCodeSkew} {
		if *d < 0 || *d > 10*time.Minute {
			return configErr("%s %s: use a duration between 1s and 10m", name, *d)
		}
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
