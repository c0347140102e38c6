package clock

import (
	"testing"
	"time"
)

// BenchmarkNow is the cost a decision pays for its time: the Clock against
// time.Now, its baseline, in the same run (compare ns/op of the two).
func BenchmarkNow(b *testing.B) {
	b.Run("time.Now", func(b *testing.B) {
		for b.Loop() {
			time.Now()
		}
	})
	b.Run("clock", func(b *testing.B) {
		c := New(Options{Centre: &fakeCentre{off: 3 * time.Millisecond, sync: time.Now()}})
		for b.Loop() {
			c.Now()
		}
	})
}
