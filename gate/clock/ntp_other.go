//go:build !linux

package clock

import "errors"

// Kernel is the kernel's NTP state; off Linux it cannot tell.
func Kernel() NTP { return kernelNTP{} }

type kernelNTP struct{}

func (kernelNTP) Synchronized() (bool, error) {
	return false, errors.New("NTP state is read on Linux only")
}
