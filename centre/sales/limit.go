package sales

import (
	"math"
	"sync"
	"time"
)

// limiter is a token bucket per key (a buyer or an address). Buckets that
// have refilled are dropped when the map grows, so memory follows the
// number of recently active keys.
type limiter struct {
	perSec float64
	burst  float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// newLimiter allows perMinute requests a minute with the given burst; a
// negative perMinute returns nil, which allows everything.
func newLimiter(perMinute float64, burst int) *limiter {
	if perMinute < 0 {
		return nil
	}
	return &limiter{perSec: perMinute / 60, burst: float64(burst), buckets: map[string]*bucket{}}
}

// allow takes a token for key at now, or says how long until one is there.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= 100_000 {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	if dt := now.Sub(b.at).Seconds(); dt > 0 {
		b.tokens = math.Min(l.burst, b.tokens+dt*l.perSec)
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	if l.perSec <= 0 {
		return false, time.Hour
	}
	return false, time.Duration((1 - b.tokens) / l.perSec * float64(time.Second))
}

func (l *limiter) prune(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*l.perSec >= l.burst {
			delete(l.buckets, k)
		}
	}
}
