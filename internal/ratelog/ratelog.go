// Package ratelog bounds repeated log lines: an error that recurs on every
// scan (a full disk, a failing store) is logged once, then once every
// interval with the count of the lines it held back, so the log cannot
// fill what is left of the disk.
package ratelog

import (
	"sync"
	"time"
)

// Limiter decides, per key, whether a line is logged now. The zero value
// is not usable; use New. It is safe for concurrent use.
type Limiter struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	keys map[string]*key
}

type key struct {
	last       time.Time
	suppressed int
}

// New returns a limiter that lets one line per key through every interval
// (default 10s); now is its clock (default time.Now).
func New(every time.Duration, now func() time.Time) *Limiter {
	if every <= 0 {
		every = 10 * time.Second
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{every: every, now: now, keys: map[string]*key{}}
}

// Allow reports whether a line for key is logged now, and how many were
// held back since the last one that was: log that count with the line.
func (l *Limiter) Allow(k string) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	s := l.keys[k]
	if s == nil {
		if len(l.keys) > 1000 {
			clear(l.keys) // keys are a fixed few; never grow without bound
		}
		s = &key{}
		l.keys[k] = s
	} else if now.Sub(s.last) < l.every && now.After(s.last) {
		s.suppressed++
		return false, 0
	}
	n := s.suppressed
	s.last, s.suppressed = now, 0
	return true, n
}
