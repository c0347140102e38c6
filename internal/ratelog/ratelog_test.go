package ratelog

import (
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := New(10*time.Second, func() time.Time { return now })
	for _, step := range []struct {
		after      time.Duration
		key        string
		ok         bool
		suppressed int
	}{
		{0, "a", true, 0},
		{time.Second, "a", false, 0},
		{time.Second, "a", false, 0},
		{0, "b", true, 0}, // keys are apart
		{9 * time.Second, "a", true, 2},
		{time.Second, "a", false, 0},
		{-time.Hour, "a", true, 1}, // a clock stepped back never silences a key for good
	} {
		now = now.Add(step.after)
		ok, n := l.Allow(step.key)
		if ok != step.ok || n != step.suppressed {
			t.Fatalf("at %s %s: Allow = %v, %d; want %v, %d", now.Format(time.TimeOnly), step.key, ok, n, step.ok, step.suppressed)
		}
	}
}
