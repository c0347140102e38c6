package gate

import (
	"strings"
	"testing"
	"time"
)

func TestJournalRetention(t *testing.T) {
	for _, tc := range []struct {
		value string // journal_retention; "-" leaves it out
		want  time.Duration
		err   bool
	}{
		{"-", DefaultJournalRetention, false},
		{"0", 0, false},
		{"30d", 30 * 24 * time.Hour, false},
		{"1d", 24 * time.Hour, false},
		{"36h", 36 * time.Hour, false},
		{"90m", 90 * time.Minute, false},
		{"30m", 0, true}, // an archive step every scan or so: surely a typo
		{"-1d", 0, true},
		{"a week", 0, true},
		{"7x", 0, true},
	} {
		y := "data: /d\ngate: g1\n"
		if tc.value != "-" {
			y += "journal_retention: " + tc.value + "\n"
		}
		c, err := ParseConfig([]byte(y), "gated.yaml")
		if err == nil {
			err = c.Validate()
		}
		if tc.err {
			if err == nil || !strings.Contains(err.Error(), "journal_retention") {
				t.Errorf("%q: %v, want an error naming journal_retention", tc.value, err)
			}
			continue
		}
		if err != nil || c.Retention() != tc.want {
			t.Errorf("%q: %v, %v; want %v", tc.value, c.Retention(), err, tc.want)
		}
	}
}
