// Package cli holds what gated's and gatesync's commands share: flag
// parsing that allows flags after positional arguments, repeatable flags,
// and the exit codes operators script against.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/gated-dev/gated/internal/daemonlog"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitFail  = 1 // the command ran and failed
	ExitUsage = 2 // bad flag, argument or config: fix the invocation
)

// UsageError is an invocation a person must fix; it maps to ExitUsage.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, a ...any) error { return &UsageError{Msg: fmt.Sprintf(format, a...)} }

// Parse parses args into fs, accepting flags before and after positional
// arguments (`provision FILE --data DIR` and `provision --data DIR FILE`).
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, Usagef("%s: %v (see %s --help)", fs.Name(), err, fs.Name())
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// Strings is a repeatable string flag.
type Strings []string

func (s *Strings) String() string     { return strings.Join(*s, ",") }
func (s *Strings) Set(v string) error { *s = append(*s, v); return nil }

// Set reports which flags were given on the command line.
func Set(fs *flag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

// Logger returns a text logger at level on w; a key given to With again
// replaces the earlier value, so a component scope is logged once.
func Logger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level))
	return slog.New(daemonlog.Scoped(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})))
}

// Help prints a flag set's usage to w.
func Help(w io.Writer, fs *flag.FlagSet, synopsis string) {
	fmt.Fprintf(w, "usage: %s\n\n", synopsis)
	fs.SetOutput(w)
	fs.PrintDefaults()
}
