package scanner_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/scanner"
	"github.com/gated-dev/gated/gate/scanner/scannertest"
)

var update = flag.Bool("update", false, "rewrite golden files (and the synthetic HID recordings) under testdata/")

// ticket is a real static ticket payload (gatesync issue): long enough to
// span several HID POS reports, and it holds spaces, ':' and '$'.
const ticket = "G1:V50100XF9BFAM-PA57YEHEW00UC9:NLKO5MH100000000000000850AWHQFFKDRCK9LGI8IRYKA8KLB T5OP1HPAZ08I7CDG5RJ*HIUACHMUS3VWJ5J6U7VF OK$$5J9PF452XUI170ADSYOW/U10"

func models(t testing.TB) scanner.Models {
	t.Helper()
	m, err := scanner.LoadModels("")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// recordings are the HID report sequences under testdata/hid. They were
// made with scannertest's report builders from each model's layout (no
// hardware was at hand); -update rewrites them.
var recordings = []struct {
	name, uri string
	make      func(t testing.TB, m scanner.Models) [][]byte
}{
	{"honeywell-pos", "hid:?model=honeywell-xenon-1950g&mode=hid-pos", func(t testing.TB, m scanner.Models) [][]byte {
		l := m["honeywell-xenon-1950g"].HIDPOS
		var r [][]byte
		r = append(r, []byte{0x01, 0x00, 0x00}) // a short report of another id: ignored
		r = append(r, scannertest.POSReports(l, "]Q1", []byte(ticket))...)
		r = append(r, scannertest.POSReports(l, "]C0", []byte("SHORT-128"))...)
		other := scannertest.POSReports(l, "]Q1", []byte("WRONG-ID"))[0]
		other[0] = 0x05 // a report id the layout does not use: ignored
		r = append(r, other)
		r = append(r, scannertest.POSReports(l, "]Q1", bytes.Repeat([]byte("X"), 1500))...)
		return r
	}},
	{"zebra-pos", "hid:?model=zebra-ds2208&mode=hid-pos", func(t testing.TB, m scanner.Models) [][]byte {
		return scannertest.POSReports(m["zebra-ds2208"].HIDPOS, "Q1\x00", []byte(ticket))
	}},
	{"keyboard-us", "hid:?model=honeywell-xenon-1950g&mode=keyboard&layout=us", func(t testing.TB, m scanner.Models) [][]byte {
		r, err := scannertest.KeyboardReports(scanner.Layouts["us"], "]Q1"+ticket)
		if err != nil {
			t.Fatal(err)
		}
		// A held key repeats its report: it must not type twice.
		r = append(r[:3], r[2:]...)
		extra, _ := scannertest.KeyboardReports(scanner.Layouts["us"], "Hello, World! 123")
		r = append(r, extra...)
		// A key the layout cannot type (F1) spoils the read.
		bad, _ := scannertest.KeyboardReports(scanner.Layouts["us"], "AB")
		bad = append([][]byte{{0, 0, 0x3a, 0, 0, 0, 0, 0}}, bad...)
		return append(r, bad...)
	}},
	{"keyboard-de", "hid:?model=newland-fm430&mode=keyboard&layout=de", func(t testing.TB, m scanner.Models) [][]byte {
		r, err := scannertest.KeyboardReports(scanner.Layouts["de"], "]Q1"+ticket)
		if err != nil {
			t.Fatal(err)
		}
		extra, _ := scannertest.KeyboardReports(scanner.Layouts["de"], "yz YZ ß@€")
		return append(r, extra...)
	}},
}

// TestHIDRecordings replays recorded report sequences through the HID
// source and a fake bus and compares the reads with golden files.
func TestHIDRecordings(t *testing.T) {
	m := models(t)
	for _, rec := range recordings {
		t.Run(rec.name, func(t *testing.T) {
			path := filepath.Join("testdata", "hid", rec.name+".hex")
			if *update {
				os.MkdirAll(filepath.Dir(path), 0o755)
				var b bytes.Buffer
				fmt.Fprintf(&b, "# %s: HID input reports, one a line (synthetic; see hid_test.go)\n", rec.name)
				scannertest.WriteReports(&b, rec.make(t, m))
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			reports, err := scannertest.ReadReports(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			bus := &scannertest.Bus{}
			play := &scannertest.Playback{Reports: reports}
			bus.Add(scanner.HIDInfo{Path: "fake-1", VID: 0x0c2e, PID: 0x0b67}, play)
			src, err := scanner.Open(strings.Replace(rec.uri, "hid:", "hid:0c2e:0b67", 1), scanner.Env{HID: bus, Models: m})
			if err != nil {
				t.Fatal(err)
			}
			got := collect(t, src, play)
			compareGolden(t, filepath.Join("testdata", "hid", rec.name+".golden"), got)
		})
	}
}

// collect runs src until play is drained, then returns its scans as
// golden text.
func collect(t *testing.T, src scanner.Source, play *scannertest.Playback) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan scanner.Scan)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	var b strings.Builder
loop:
	for {
		select {
		case s := <-out:
			fmt.Fprintf(&b, "%s\t%v\t%q\n", s.Symbology, s.Truncated, s.Data)
		case <-play.Drained():
			break loop
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	return b.String()
}

func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestHIDReconnect unplugs the device mid-session and plugs it back: the
// source finds it again and goes on reading.
func TestHIDReconnect(t *testing.T) {
	m := models(t)
	l := m["honeywell-xenon-1950g"].HIDPOS
	first := &scannertest.Playback{Reports: scannertest.POSReports(l, "]Q1", []byte("FIRST")), Unplug: true}
	second := &scannertest.Playback{Reports: scannertest.POSReports(l, "]Q1", []byte("SECOND"))}
	bus := &scannertest.Bus{}
	bus.Add(scanner.HIDInfo{Path: "fake-1", VID: 0x0c2e, PID: 0x0b67}, first, second)
	src, err := scanner.Open("hid:?model=honeywell-xenon-1950g", scanner.Env{HID: bus, Models: m,
		Backoff: scanner.Backoff{Sleep: func(ctx context.Context, d time.Duration) error { return ctx.Err() }}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan scanner.Scan)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	for _, want := range []string{"FIRST", "SECOND"} {
		s := <-out
		if string(s.Data) != want || s.Symbology != "]Q1" || s.Source != "hid:0c2e:0b67" {
			t.Fatalf("scan %+v, want %s ]Q1 from hid:0c2e:0b67", s, want)
		}
	}
	if n := bus.Opened(); n != 2 {
		t.Errorf("opened %d times, want 2", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestHIDFeatureReport checks that a model that needs a feature report to
// enter HID POS gets it on every opening.
func TestHIDFeatureReport(t *testing.T) {
	m := models(t)
	md := *m["zebra-ds2208"]
	md.HIDPOS.FeatureReport = []byte{0x06, 0x01, 0x02}
	m["zebra-ds2208"] = &md
	play := &scannertest.Playback{Reports: scannertest.POSReports(md.HIDPOS, "]Q1", []byte("X"))}
	bus := &scannertest.Bus{}
	bus.Add(scanner.HIDInfo{Path: "z", VID: 0x05e0, PID: 0x1900}, play)
	src, err := scanner.Open("hid:?model=zebra-ds2208", scanner.Env{HID: bus, Models: m})
	if err != nil {
		t.Fatal(err)
	}
	collect(t, src, play)
	if f := play.Features(); len(f) != 1 || !bytes.Equal(f[0], md.HIDPOS.FeatureReport) {
		t.Errorf("feature reports sent: % x, want one: % x", f, md.HIDPOS.FeatureReport)
	}
}

func TestHIDOpenErrors(t *testing.T) {
	m := models(t)
	for _, tc := range []struct{ uri, want string }{
		{"hid:zz:0b67?model=honeywell-xenon-1950g", "want hid:VID:PID in hex"},
		{"hid:?model=honeywell-xenon-1950g&mode=tablet", "use hid-pos or keyboard"},
		{"hid:?model=honeywell-xenon-1950g&mode=keyboard&layout=fr", "known layouts: de, us"},
		{"hid:?model=nope", `unknown model "nope"`},
		{"hid:0c2e:0b67", "no ?model=NAME"},
	} {
		_, err := scanner.Open(tc.uri, scanner.Env{HID: &scannertest.Bus{}, Models: m})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", tc.uri, err, tc.want)
		}
	}
	if _, err := scanner.Open("hid:?model=zebra-ds2208", scanner.Env{HID: &scannertest.Bus{}, Models: m}); err != nil {
		t.Errorf("model ids: %v", err)
	}
}
