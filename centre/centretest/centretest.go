// Package centretest gives tests of what is built on the centre (the
// dashboard, the ticket page, sales) a real centre in a directory of
// theirs: its root key, API token and books, closed when the test ends.
package centretest

import (
	"testing"

	"github.com/gated-dev/gated/centre"
)

// New initialises a centre in dir, which must not hold one yet, and opens
// it on the system clock; t.Cleanup closes it.
func New(t testing.TB, dir string) *centre.Centre {
	t.Helper()
	if err := centre.Init(dir, nil); err != nil {
		t.Fatal(err)
	}
	c, err := centre.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
