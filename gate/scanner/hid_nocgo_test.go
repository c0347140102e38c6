//go:build !cgo

package scanner_test

import (
	"errors"
	"testing"

	"github.com/gated-dev/gated/gate/scanner"
)

// Without cgo there is no USB HID: hid: says so at start.
func TestHIDUnavailableWithoutCgo(t *testing.T) {
	_, err := scanner.Open("hid:?model=zebra-ds2208", scanner.Env{})
	if !errors.Is(err, scanner.ErrHIDUnavailable) {
		t.Fatalf("Open = %v, want ErrHIDUnavailable", err)
	}
}
