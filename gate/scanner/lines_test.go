package scanner_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/scanner"
)

func TestLines(t *testing.T) {
	in := "G1:AB \r\n\n   \n  G1:CD\n" + strings.Repeat("X", scanner.MaxLine+10) + "\nlast"
	src, err := scanner.Open("stdin:", scanner.Env{Stdin: strings.NewReader(in), Now: func() time.Time { return time.Unix(1, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan scanner.Scan, 10)
	if err := src.Run(context.Background(), out); err != nil {
		t.Fatal(err)
	}
	close(out)
	var got []string
	for s := range out {
		got = append(got, strings.Join([]string{string(s.Data[:min(len(s.Data), 8)]), map[bool]string{true: "cut"}[s.Truncated]}, "|"))
	}
	want := []string{"G1:AB |", "G1:CD|", "XXXXXXXX|cut", "last|"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("scans %q, want %q", got, want)
	}
}
