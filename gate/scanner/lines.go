package scanner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"time"
)

// MaxLine is the longest line a line source passes on whole. A ticket is
// far shorter; anything longer is noise, so it is cut and marked Truncated
// rather than buffered without bound.
const MaxLine = 4096

// Lines is a source that reads one scan per line: standard input, a
// keyboard-wedge scanner on a console, a test's pipe.
type Lines struct {
	name string
	r    io.Reader
	now  func() time.Time
}

// NewLines returns a line source named name reading r.
func NewLines(name string, r io.Reader, now func() time.Time) *Lines {
	return &Lines{name: name, r: r, now: now}
}

// Name implements Source.
func (l *Lines) Name() string { return l.name }

// Run implements Source. Blank lines are skipped; CR LF and LF both end a
// line. It returns nil at end of input.
func (l *Lines) Run(ctx context.Context, out chan<- Scan) error {
	br := bufio.NewReaderSize(l.r, MaxLine)
	for {
		line, err := br.ReadSlice('\n')
		truncated := false
		if errors.Is(err, bufio.ErrBufferFull) {
			truncated = true
			line = bytes.Clone(line)
			for errors.Is(err, bufio.ErrBufferFull) { // discard the rest of the line
				_, err = br.ReadSlice('\n')
			}
		}
		// Trailing spaces stay: a Base45 ticket may end with one.
		if data := bytes.TrimRight(bytes.TrimLeft(line, " \t\r\n"), "\r\n"); len(data) > 0 {
			s := Scan{Data: bytes.Clone(data), Source: l.name, At: l.now(), Truncated: truncated}
			select {
			case out <- s:
			case <-ctx.Done():
				return nil
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
