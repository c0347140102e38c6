package ops

// ClockStatus is whether the gate trusts its wall clock, as /status and
// the console show it.
type ClockStatus struct {
	// Trusted is false while decisions follow another clock than the
	// wall clock (it stepped and nothing confirmed the step).
	Trusted bool `json:"trusted"`
	// Source is what decisions follow: wall, centre, monotonic or floor.
	Source string `json:"source"`
	// OffsetMs is the decision time minus the wall clock.
	OffsetMs int64 `json:"offset_ms"`
	// Detail says why, for people.
	Detail string `json:"detail,omitempty"`
}

// Clock is what the monitor reads of the gate's decision clock.
type Clock interface {
	ClockStatus() ClockStatus
}

// SetClock attaches the gate's decision clock; /status shows it from then on.
func (m *Monitor) SetClock(c Clock) {
	m.mu.Lock()
	m.clock = c
	m.mu.Unlock()
}
