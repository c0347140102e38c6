package clock

import "golang.org/x/sys/unix"

// Kernel is the kernel's NTP state, read with adjtimex(2) without changing
// anything: synchronised when the clock is not in TIME_ERROR and
// STA_UNSYNC is clear. systemd-timesyncd and chronyd set it when they
// have synchronised the clock, and settimeofday (date -s, a typo) clears
// it; it is what `timedatectl show -p NTPSynchronized` reports.
func Kernel() NTP { return kernelNTP{} }

type kernelNTP struct{}

func (kernelNTP) Synchronized() (bool, error) {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return false, err
	}
	return state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0, nil
}
