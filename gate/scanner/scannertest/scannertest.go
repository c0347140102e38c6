// Package scannertest has fakes of the devices scanner reads: a HID bus
// whose devices replay recorded input reports, and helpers to build the
// reports a HID POS or keyboard-wedge scanner sends.
package scannertest

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/gated-dev/gated/gate/scanner"
)

// Playback is a fake HID device that returns recorded input reports one
// Read at a time, records what is written to it, and then either blocks
// until closed or fails (as an unplugged device does) when Unplug is set.
type Playback struct {
	Reports [][]byte
	// Unplug makes Read fail once the reports are used up.
	Unplug bool

	mu       sync.Mutex
	written  [][]byte
	features [][]byte
	closed   chan struct{}
	drained  chan struct{}
	once     sync.Once
}

// ErrUnplugged is what a Playback's Read returns after its reports when
// Unplug is set.
var ErrUnplugged = errors.New("scannertest: device unplugged")

func (p *Playback) init() {
	p.once.Do(func() { p.closed, p.drained = make(chan struct{}), make(chan struct{}) })
}

// Drained is closed when the device is read after its last report: the
// reader has handled every report by then.
func (p *Playback) Drained() <-chan struct{} {
	p.init()
	return p.drained
}

// Read implements scanner.HIDDevice.
func (p *Playback) Read(b []byte) (int, error) {
	p.init()
	p.mu.Lock()
	if len(p.Reports) > 0 {
		r := p.Reports[0]
		p.Reports = p.Reports[1:]
		p.mu.Unlock()
		return copy(b, r), nil
	}
	unplug := p.Unplug
	select {
	case <-p.drained:
	default:
		close(p.drained)
	}
	p.mu.Unlock()
	if unplug {
		return 0, ErrUnplugged
	}
	<-p.closed
	return 0, errors.New("scannertest: device closed")
}

// Write implements scanner.HIDDevice.
func (p *Playback) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.written = append(p.written, bytes.Clone(b))
	return len(b), nil
}

// SendFeatureReport implements scanner.FeatureReporter.
func (p *Playback) SendFeatureReport(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.features = append(p.features, bytes.Clone(b))
	return len(b), nil
}

// Features returns the feature reports sent to the device.
func (p *Playback) Features() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.features
}

// Close implements scanner.HIDDevice.
func (p *Playback) Close() error {
	p.init()
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.closed:
	default:
		close(p.closed)
	}
	return nil
}

// Bus is a fake HID bus. Each Open of a device hands out the next of its
// Playbacks, so a test can script an unplug and a replug.
type Bus struct {
	mu      sync.Mutex
	devices []busDevice
	opened  int
}

type busDevice struct {
	info  scanner.HIDInfo
	plays []*Playback
}

// Add puts a device on the bus that replays plays, one per opening.
func (b *Bus) Add(info scanner.HIDInfo, plays ...*Playback) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.devices = append(b.devices, busDevice{info: info, plays: plays})
}

// Enumerate implements scanner.HIDBus. A device whose playbacks are used
// up is no longer present.
func (b *Bus) Enumerate(vid, pid uint16) ([]scanner.HIDInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []scanner.HIDInfo
	for _, d := range b.devices {
		if len(d.plays) > 0 && (vid == 0 || d.info.VID == vid) && (pid == 0 || d.info.PID == pid) {
			out = append(out, d.info)
		}
	}
	return out, nil
}

// Open implements scanner.HIDBus.
func (b *Bus) Open(info scanner.HIDInfo) (scanner.HIDDevice, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, d := range b.devices {
		if d.info.Path == info.Path && len(d.plays) > 0 {
			p := d.plays[0]
			b.devices[i].plays = d.plays[1:]
			b.opened++
			return p, nil
		}
	}
	return nil, fmt.Errorf("scannertest: no device %s", info.Path)
}

// Opened returns how many times devices were opened.
func (b *Bus) Opened() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opened
}

// ReadReports parses a recording: one report a line in hex, with blank
// lines and lines starting with # ignored.
func ReadReports(r io.Reader) ([][]byte, error) {
	var out [][]byte
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		b, err := hex.DecodeString(strings.Join(strings.Fields(line), ""))
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		out = append(out, b)
	}
	return out, sc.Err()
}

// WriteReports writes reports in the format ReadReports reads.
func WriteReports(w io.Writer, reports [][]byte) error {
	for _, r := range reports {
		if _, err := fmt.Fprintln(w, hex.EncodeToString(r)); err != nil {
			return err
		}
	}
	return nil
}

// POSReports splits a read into HID POS input reports in layout l, the
// way a scanner sends one: the AIM id in each report, the continuation
// flag on all but the last, and a trailing CR after the data.
func POSReports(l scanner.HIDLayout, aim string, data []byte) [][]byte {
	data = append(bytes.Clone(data), '\r')
	var out [][]byte
	for len(data) > 0 {
		n := min(len(data), l.DataLen)
		r := make([]byte, l.ReportLen)
		r[0] = byte(l.ReportID)
		r[l.LengthOffset] = byte(n)
		copy(r[l.DataOffset:], data[:n])
		if l.AIMOffset > 0 {
			copy(r[l.AIMOffset:l.AIMOffset+3], aim)
		}
		data = data[n:]
		if len(data) > 0 {
			r[l.MoreOffset] = 1
		}
		out = append(out, r)
	}
	return out
}

// KeyboardReports types text as a keyboard-wedge scanner on layout l does:
// a boot report with the key down, then one with every key up, and Enter
// at the end. It fails on a character the layout cannot type.
func KeyboardReports(l *scanner.Layout, text string) ([][]byte, error) {
	type key struct{ mod, code byte }
	keys := map[string]key{}
	for code, s := range l.Plain {
		keys[s] = key{0, code}
	}
	for code, s := range l.Shift {
		if _, ok := keys[s]; !ok {
			keys[s] = key{0x02, code}
		}
	}
	for code, s := range l.AltGr {
		if _, ok := keys[s]; !ok {
			keys[s] = key{0x40, code}
		}
	}
	var out [][]byte
	for _, c := range text {
		k, ok := keys[string(c)]
		if !ok {
			return nil, fmt.Errorf("layout %s cannot type %q", l.Name, c)
		}
		out = append(out, []byte{k.mod, 0, k.code, 0, 0, 0, 0, 0}, make([]byte, 8))
	}
	out = append(out, []byte{0, 0, 0x28, 0, 0, 0, 0, 0}, make([]byte, 8))
	return out, nil
}
