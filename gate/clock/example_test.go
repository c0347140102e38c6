package clock_test

import (
	"fmt"
	"time"

	"github.com/gated-dev/gated/gate/clock"
)

// A gate's wall clock is set 8 hours ahead by hand while it runs. NTP does
// not vouch for the step (setting the clock clears the kernel's flag), so
// decisions carry on from the time already in use; once the clock is set
// right they follow it again.
func Example() {
	truth := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	var elapsed, wallOff time.Duration
	c := clock.New(clock.Options{
		Wall: func() time.Time { return truth.Add(elapsed + wallOff) },
		Mono: func() time.Duration { return elapsed },
		NTP:  clock.NoNTP(),
	})
	// A daemon also runs c.Run(ctx): it sees steps between decisions and
	// persists the floor file.
	fmt.Println(c.Now().Format(time.TimeOnly), c.State().Source)
	elapsed, wallOff = time.Minute, 8*time.Hour
	fmt.Println(c.Now().Format(time.TimeOnly), c.State().Source)
	elapsed, wallOff = 2*time.Minute, 0
	fmt.Println(c.Now().Format(time.TimeOnly), c.State().Source)
	// Output:
	// 18:00:00 wall
	// 18:01:00 monotonic
	// 18:02:00 wall
}
