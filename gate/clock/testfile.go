package clock

import (
	"errors"
	"os"
	"strings"
	"time"
)

// FileClock is a wall clock and NTP state read from a file, so tests of
// the real binary can step the clock (libfaketime does not move Go's
// clock). The file holds lines `offset=DURATION` (added to the system's
// wall clock, e.g. 8h or -30m) and `ntp=synchronised|unsynchronised|unknown`
// (default unknown). A missing or unreadable file reads as no offset and
// unknown NTP state. It is for tests only: gated uses it when
// GATED_TEST_CLOCK_FILE names a file.
type FileClock struct{ Path string }

func (f FileClock) read() (off time.Duration, ntp string) {
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return 0, ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(l), "=")
		switch k {
		case "offset":
			if d, err := time.ParseDuration(v); err == nil {
				off = d
			}
		case "ntp":
			ntp = v
		}
	}
	return off, ntp
}

// Now is the system's wall clock plus the file's offset.
func (f FileClock) Now() time.Time {
	off, _ := f.read()
	return time.Now().Round(0).Add(off)
}

// Synchronized implements NTP from the file's ntp line.
func (f FileClock) Synchronized() (bool, error) {
	switch _, s := f.read(); s {
	case "synchronised", "synchronized":
		return true, nil
	case "unsynchronised", "unsynchronized":
		return false, nil
	}
	return false, errors.New("NTP state unknown")
}
