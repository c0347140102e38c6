package scanner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// HIDDevice is what a HID source needs of an open device; karalabe/usb's
// Device satisfies it. Read returns one input report (with its report id
// first when the device numbers its reports).
type HIDDevice interface {
	Read(p []byte) (int, error)
	Write(p []byte) (int, error)
	Close() error
}

// FeatureReporter is the optional capability of a device handle that can
// send a HID feature report (report id first).
type FeatureReporter interface {
	SendFeatureReport(p []byte) (int, error)
}

// HIDInfo describes one HID interface found on the bus.
type HIDInfo struct {
	Path                          string
	VID, PID                      uint16
	Interface                     int
	Manufacturer, Product, Serial string
	raw                           any // the library's handle for Open
}

// HIDBus finds and opens HID devices. On Linux the usage page is not
// reported, so devices are matched by ids and interface number.
type HIDBus interface {
	Enumerate(vid, pid uint16) ([]HIDInfo, error)
	Open(info HIDInfo) (HIDDevice, error)
}

// ErrHIDUnavailable is returned when this build has no USB HID support.
//
//lint:ignore ST1005 it ends with the scheme serial:, which the operator types
var ErrHIDUnavailable = errors.New("USB HID is unavailable in this build of gated (built with CGO_ENABLED=0; github.com/karalabe/usb needs cgo): rebuild with CGO_ENABLED=1, or switch the scanner to USB serial mode and use serial:")

// HID reads a USB scanner in HID POS or keyboard-wedge mode.
type HID struct {
	name     string
	vid, pid uint16
	iface    int // -1: any
	mode     string
	model    *Model
	layout   *Layout
	bus      HIDBus
	now      func() time.Time
	log      *slog.Logger
	backoff  Backoff
}

func newHIDFromQuery(where string, md *Model, q url.Values, env Env) (*HID, error) {
	mode := q.Get("mode")
	if mode == "" {
		mode = md.Transport
		if mode == "serial" {
			mode = "hid-pos"
		}
	}
	if mode != "hid-pos" && mode != "keyboard" {
		return nil, fmt.Errorf("mode=%q: use hid-pos or keyboard", mode)
	}
	id, ok := md.usbID(mode)
	if where != "" {
		v, p, found := strings.Cut(where, ":")
		vid, err1 := strconv.ParseUint(v, 16, 16)
		pid, err2 := strconv.ParseUint(p, 16, 16)
		if !found || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%q: want hid:VID:PID in hex, e.g. hid:0c2e:0b67?model=%s", where, md.Name)
		}
		id = USBID{Mode: mode, VID: Hex16(vid), PID: Hex16(pid), Interface: id.Interface}
	} else if !ok {
		return nil, fmt.Errorf("model %s lists no USB ids for mode %s; give them as hid:VID:PID", md.Name, mode)
	}
	iface := -1
	if v := q.Get("interface"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("interface=%q: want a USB interface number", v)
		}
		iface = n
	} else if ok {
		iface = id.Interface
	}
	var layout *Layout
	if mode == "keyboard" {
		name := q.Get("layout")
		if name == "" {
			name = "us"
		}
		if layout = Layouts[name]; layout == nil {
			return nil, fmt.Errorf("layout=%q: known layouts: %s", name, strings.Join(layoutNames(), ", "))
		}
	}
	if mode == "hid-pos" && md.HIDPOS.ReportLen == 0 {
		return nil, fmt.Errorf("model %s has no hid_pos report layout", md.Name)
	}
	bus := env.HID
	if bus == nil {
		bus = DefaultHIDBus()
	}
	if bus == nil {
		return nil, ErrHIDUnavailable
	}
	name := fmt.Sprintf("hid:%s:%s", id.VID, id.PID)
	h := &HID{name: name, vid: uint16(id.VID), pid: uint16(id.PID), iface: iface, mode: mode, model: md,
		layout: layout, bus: bus, now: env.Now, backoff: env.Backoff.withDefaults(),
		log: env.Log.With("scanner", name, "model", md.Name, "mode", mode)}
	return h, nil
}

// Name implements Source.
func (h *HID) Name() string { return h.name }

// Run implements Source. It returns only when ctx is done; a device that
// is unplugged is looked for again with backoff.
func (h *HID) Run(ctx context.Context, out chan<- Scan) error {
	delay := h.backoff.Min
	failing := false
	for ctx.Err() == nil {
		dev, err := h.find()
		if err != nil {
			if !failing {
				h.log.Warn("scanner not available; retrying", "err", err)
				failing = true
			}
			if h.backoff.Sleep(ctx, delay) != nil {
				break
			}
			delay = min(delay*2, h.backoff.Max)
			continue
		}
		failing, delay = false, h.backoff.Min
		h.log.Info("scanner connected")
		err = h.read(ctx, dev, out)
		dev.Close()
		if ctx.Err() != nil {
			break
		}
		h.log.Warn("scanner disconnected; looking for it again", "err", err)
	}
	return nil
}

func (h *HID) find() (HIDDevice, error) {
	infos, err := h.bus.Enumerate(h.vid, h.pid)
	if err != nil {
		return nil, fmt.Errorf("enumerate USB HID: %w", err)
	}
	for _, in := range infos {
		if h.iface >= 0 && in.Interface != h.iface {
			continue
		}
		dev, err := h.bus.Open(in)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w (on Linux the daemon's user needs access to /dev/bus/usb: install systemd/60-gated-scanners.rules)", in.Path, err)
		}
		if fr := h.model.HIDPOS.FeatureReport; h.mode == "hid-pos" && len(fr) > 0 {
			if f, ok := dev.(FeatureReporter); ok {
				if _, err := f.SendFeatureReport(fr); err != nil {
					h.log.Warn("feature report to switch into HID POS failed", "err", err)
				}
			} else {
				h.log.Warn("cannot send the HID POS feature report through this USB library; program the scanner with the setup steps of its model file")
			}
		}
		return dev, nil
	}
	return nil, fmt.Errorf("no USB HID device %04x:%04x (interface %d) present; is it plugged in and in %s mode?", h.vid, h.pid, h.iface, h.mode)
}

func (h *HID) read(ctx context.Context, dev HIDDevice, out chan<- Scan) error {
	// hidapi's read blocks; closing the device is what ends it.
	stop := context.AfterFunc(ctx, func() { dev.Close() })
	defer stop()
	var dec interface {
		report(r []byte) []frame
	}
	if h.mode == "keyboard" {
		dec = &keyboardDecoder{layout: h.layout, max: h.model.Framing.MaxFrame}
	} else {
		dec = &posDecoder{l: h.model.HIDPOS, max: h.model.Framing.MaxFrame}
	}
	buf := make([]byte, 1024)
	for {
		n, err := dev.Read(buf)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		now := h.now()
		for _, f := range dec.report(buf[:n]) {
			sc := Scan{Data: f.data, Symbology: f.symbology, Source: h.name, At: now, Truncated: f.truncated}
			select {
			case out <- sc:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// posDecoder reassembles reads from HID POS input reports: each report
// carries a length, up to DataLen bytes, the AIM id, and a flag saying the
// read continues in the next report.
type posDecoder struct {
	l    HIDLayout
	max  int
	buf  []byte
	aim  string
	over bool
}

func (d *posDecoder) report(r []byte) []frame {
	l := d.l
	need := max(l.LengthOffset, l.DataOffset+1, l.MoreOffset, l.AIMOffset+3) + 1
	if len(r) < need || int(r[0]) != l.ReportID {
		return nil // another report (or a short one): not a read
	}
	n := min(int(r[l.LengthOffset]), l.DataLen, len(r)-l.DataOffset)
	if l.AIMOffset > 0 && len(d.buf) == 0 {
		d.aim = hidAIM(r[l.AIMOffset : l.AIMOffset+3])
	}
	if !d.over {
		d.buf = append(d.buf, r[l.DataOffset:l.DataOffset+n]...)
		if len(d.buf) > d.max {
			d.buf, d.over = d.buf[:d.max], true
		}
	}
	if r[l.MoreOffset]&1 != 0 {
		return nil
	}
	f := frame{symbology: d.aim, truncated: d.over}
	b := bytes.TrimRight(d.buf, "\r\n")
	if d.aim == "" && isAIM(b) {
		f.symbology, b = string(b[:3]), b[3:]
	}
	f.data = bytes.Clone(b)
	d.buf, d.aim, d.over = d.buf[:0], "", false
	if len(f.data) == 0 {
		return nil
	}
	return []frame{f}
}

// hidAIM reads the 3 AIM bytes of a report; some models send "]Q1", some
// "Q1" and a pad byte.
func hidAIM(b []byte) string {
	if isAIM(b) {
		return string(b)
	}
	if isAlpha(b[0]) && (isAlpha(b[1]) || b[1] >= '0' && b[1] <= '9') {
		return "]" + string(b[:2])
	}
	return ""
}
