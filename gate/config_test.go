package gate

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want string // substring of the error; empty: valid
	}{
		{"data: /d\ngate: g1\n", ""},
		{"data: /d\ngate: g1\nmax_code_age: 45s\nzones: [GA, VIP]\noutput: json\n", ""},
		{"gate: g1\n", "--data"},
		{"data: /d\n", "--gate"},
		{"data: /d\ngate: 'north gate'\n", "gate id"},
		{"data: /d\ngate: g1\noutput: html\n", "console or json"},
		{"data: /d\ngate: g1\nzones: ['V I P']\n", "zone"},
		{"data: /d\ngate: g1\nmax_code_age: 1h\n", "max_code_age"},
		{"data: /d\ngate: g1\nlog_level: loud\n", "log_level"},
		{"data: /d\ngate: g1\nstrikt: true\n", "strikt"},
		{"data: [\n", "gated.yaml"},
		{"data: /d\ngate: g1\nclock_tolerance: 500ms\nclock_ntp: off\nclock_floor_file: off\nmax_frame: 1920x1080\n", ""},
		{"data: /d\ngate: g1\nclock_tolerance: 1h\n", "clock_tolerance"},
		{"data: /d\ngate: g1\nclock_tolerance: 10ms\n", "clock_tolerance"},
		{"data: /d\ngate: g1\nclock_ntp: chrony\n", "clock_ntp"},
		{"data: /d\ngate: g1\nmax_frame: 4096\n", "max_frame"},
		{"data: /d\ngate: g1\nmax_frame: 30000x30000\n", "max_frame"},
	} {
		c, err := ParseConfig([]byte(tc.yaml), "gated.yaml")
		if err == nil {
			err = c.Validate()
		}
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q: %v, want error with %q", tc.yaml, err, tc.want)
		}
	}
	c, _ := ParseConfig([]byte("data: /d\ngate: g1\nmax_code_age: 45s\n"), "x")
	if err := c.Validate(); err != nil || c.MaxCodeAge != 45*time.Second || c.Output != "console" || c.Scanners[0] != "stdin:" {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	if p, _ := c.MaxFrameSize(); c.ClockTolerance != 2*time.Second || c.ClockNTP != "kernel" || c.FloorFile() != "/d/clock-floor" || p.X != 4096 || p.Y != 4096 {
		t.Fatalf("clock and frame defaults: %+v", c)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("data: /d\ngate: g1\nscanners: [\"stdin:\"]\n"))
	f.Add([]byte("max_code_age: 10s\nzones: [a]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := ParseConfig(b, "fuzz"); err == nil {
			c.Validate()
		}
	})
}
