package scanner

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	firmwareconfigs "github.com/gated-dev/gated/firmware-configs"
	"gopkg.in/yaml.v3"
)

// Model is one scanner model as described by a file in firmware-configs/:
// how it connects, how it frames a read, how gated answers it, and how to
// program it. Zero values mean the defaults noted on each field.
type Model struct {
	// Name is the model's id, used in ?model=NAME; it must match the file name.
	Name    string `yaml:"name"`
	Vendor  string `yaml:"vendor"`
	Product string `yaml:"product"`
	// Transport is the interface mode gated expects: serial, hid-pos or keyboard.
	Transport string       `yaml:"transport"`
	Serial    SerialConfig `yaml:"serial"`
	Framing   Framing      `yaml:"framing"`
	Feedback  FeedbackCmds `yaml:"feedback"`
	// USB lists the vendor/product ids the model presents in each interface mode.
	USB    []USBID   `yaml:"usb"`
	HIDPOS HIDLayout `yaml:"hid_pos"`
	// Setup is the programming steps (codes to scan, commands to send) that
	// put the scanner in the mode this file describes. For people, not parsed.
	Setup []string `yaml:"setup"`

	file string
}

// SerialConfig is a serial line's settings. Zero means 9600 8N1.
type SerialConfig struct {
	Baud     int    `yaml:"baud"`
	DataBits int    `yaml:"data_bits"` // default 8
	Parity   string `yaml:"parity"`    // none (default), odd, even, mark, space
	StopBits int    `yaml:"stop_bits"` // 1 (default) or 2
}

// Framing says how reads are cut out of the byte stream.
type Framing struct {
	// Protocol is terminator (default: reads end with Terminator) or ssi
	// (Zebra Simple Serial Interface packets with checksums and ACK/NAK).
	Protocol string `yaml:"protocol"`
	// Terminator ends a read (hex); default 0d. Not used by ssi.
	Terminator Hex `yaml:"terminator"`
	// AIM: every read starts with an AIM identifier such as ]Q1, which is
	// stripped into Scan.Symbology and lets gated resynchronise after noise.
	AIM bool `yaml:"aim"`
	// MaxFrame is the longest read passed on whole (default 1024); longer
	// reads are cut and denied as malformed.
	MaxFrame int `yaml:"max_frame"`
}

// FeedbackCmds are the bytes sent after a decision. Empty means the model
// gets no feedback from gated.
type FeedbackCmds struct {
	Good Hex `yaml:"good"` // sent after ADMIT (terminator protocol)
	Bad  Hex `yaml:"bad"`  // sent after DENY (terminator protocol)
	// SSI beep codes and LED (ssi protocol); 0 sends none.
	SSIGoodBeep int `yaml:"ssi_good_beep"`
	SSIBadBeep  int `yaml:"ssi_bad_beep"`
	SSIGoodLED  int `yaml:"ssi_good_led"`
}

// USBID is the identity a model presents in one interface mode.
type USBID struct {
	Mode      string `yaml:"mode"` // serial, hid-pos or keyboard
	VID       Hex16  `yaml:"vid"`
	PID       Hex16  `yaml:"pid"`
	Interface int    `yaml:"interface"`
}

// HIDLayout places the fields of a HID POS input report (usage page 0x8C).
type HIDLayout struct {
	ReportID     int `yaml:"report_id"`
	ReportLen    int `yaml:"report_len"`
	LengthOffset int `yaml:"length_offset"`
	DataOffset   int `yaml:"data_offset"`
	DataLen      int `yaml:"data_len"`
	AIMOffset    int `yaml:"aim_offset"`  // 3 bytes of AIM id; 0: none
	MoreOffset   int `yaml:"more_offset"` // bit 0 set: the read continues in the next report
	// FeatureReport, when set, is sent once after opening to switch the
	// model into HID POS (hex, report id first).
	FeatureReport Hex `yaml:"feature_report"`
}

// Hex is bytes written as hex in a model file ("1b 61" or "1b61").
type Hex []byte

// UnmarshalYAML implements yaml.Unmarshaler.
func (h *Hex) UnmarshalYAML(n *yaml.Node) error {
	s := strings.Join(strings.Fields(n.Value), "")
	b, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not hex bytes such as \"1b 61\"", n.Line, n.Value)
	}
	*h = b
	return nil
}

// Hex16 is a USB id written as four hex digits ("0c2e").
type Hex16 uint16

// UnmarshalYAML implements yaml.Unmarshaler.
func (h *Hex16) UnmarshalYAML(n *yaml.Node) error {
	v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(n.Value), "0x"), 16, 16)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a 4-digit hex USB id such as \"0c2e\"", n.Line, n.Value)
	}
	*h = Hex16(v)
	return nil
}

func (h Hex16) String() string { return fmt.Sprintf("%04x", uint16(h)) }

// ModelError is a model file gated refuses: which file, which field, why.
type ModelError struct {
	File, Field, Reason string
}

func (e *ModelError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("model file %s: %s", e.File, e.Reason)
	}
	return fmt.Sprintf("model file %s: field %s: %s", e.File, e.Field, e.Reason)
}

// Models is a set of models by name.
type Models map[string]*Model

// Names returns the model names in order.
func (m Models) Names() []string {
	var n []string
	for k := range m {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// LoadModels parses the built-in model files and, when dir is not empty,
// every *.yaml in dir, which add models or replace built-in ones of the
// same name. Any file with an error refuses the whole set: a gate must not
// start with a model it half understood.
func LoadModels(dir string) (Models, error) {
	m := Models{}
	if err := loadFS(m, firmwareconfigs.FS, "firmware-configs"); err != nil {
		return nil, err
	}
	if dir != "" {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("models directory: %w", err)
		}
		if err := loadFS(m, os.DirFS(dir), dir); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func loadFS(m Models, fsys fs.FS, label string) error {
	names, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return err
	}
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return err
		}
		md, err := ParseModel(path.Join(label, n), b)
		if err != nil {
			return err
		}
		m[md.Name] = md
	}
	return nil
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)
	yamlLine = regexp.MustCompile(`^(?:yaml: )?(?:unmarshal errors:\n\s*)?line (\d+): (.*)$`)
)

// ParseModel parses and checks one model file; file names it in errors.
// Unknown keys are errors, as a misspelt setting would silently not apply.
func ParseModel(file string, b []byte) (*Model, error) {
	var md Model
	d := yaml.NewDecoder(bytes.NewReader(b))
	d.KnownFields(true)
	if err := d.Decode(&md); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ModelError{File: file, Reason: "empty file"}
		}
		msg := err.Error()
		if sm := yamlLine.FindStringSubmatch(msg); sm != nil {
			return nil, &ModelError{File: file, Field: "at line " + sm[1], Reason: sm[2]}
		}
		return nil, &ModelError{File: file, Reason: msg}
	}
	md.file = file
	if err := md.check(); err != nil {
		return nil, err
	}
	if base := strings.TrimSuffix(path.Base(file), ".yaml"); base != md.Name {
		return nil, md.fail("name", "%q differs from the file name %q; name the file %s.yaml", md.Name, base, md.Name)
	}
	return &md, nil
}

func (md *Model) fail(field, format string, a ...any) error {
	return &ModelError{File: md.file, Field: field, Reason: fmt.Sprintf(format, a...)}
}

// check fills defaults and refuses what cannot work.
func (md *Model) check() error {
	if !nameRE.MatchString(md.Name) {
		return md.fail("name", "%q: use lowercase letters, digits and '-'", md.Name)
	}
	switch md.Transport {
	case "serial", "hid-pos", "keyboard":
	case "":
		return md.fail("transport", "missing; use serial, hid-pos or keyboard")
	default:
		return md.fail("transport", "%q: use serial, hid-pos or keyboard", md.Transport)
	}
	s := &md.Serial
	if s.Baud == 0 {
		s.Baud = 9600
	}
	if !standardBaud[s.Baud] {
		return md.fail("serial.baud", "%d is not a standard rate (1200 ... 921600)", s.Baud)
	}
	if s.DataBits == 0 {
		s.DataBits = 8
	}
	if s.DataBits < 5 || s.DataBits > 8 {
		return md.fail("serial.data_bits", "%d: use 5 to 8", s.DataBits)
	}
	if s.Parity == "" {
		s.Parity = "none"
	}
	if _, ok := parities[s.Parity]; !ok {
		return md.fail("serial.parity", "%q: use none, odd, even, mark or space", s.Parity)
	}
	if s.StopBits == 0 {
		s.StopBits = 1
	}
	if s.StopBits != 1 && s.StopBits != 2 {
		return md.fail("serial.stop_bits", "%d: use 1 or 2", s.StopBits)
	}
	f := &md.Framing
	switch f.Protocol {
	case "":
		f.Protocol = "terminator"
	case "terminator", "ssi":
	default:
		return md.fail("framing.protocol", "%q: use terminator or ssi", f.Protocol)
	}
	if f.Protocol == "terminator" && len(f.Terminator) == 0 {
		f.Terminator = Hex{'\r'}
	}
	if f.MaxFrame == 0 {
		f.MaxFrame = 1024
	}
	if f.MaxFrame < 16 || f.MaxFrame > 65536 {
		return md.fail("framing.max_frame", "%d: use 16 to 65536", f.MaxFrame)
	}
	fb := md.Feedback
	if f.Protocol == "ssi" && (len(fb.Good) > 0 || len(fb.Bad) > 0) {
		return md.fail("feedback.good", "raw feedback bytes do not apply to ssi; use ssi_good_beep, ssi_bad_beep, ssi_good_led")
	}
	for field, v := range map[string]int{"feedback.ssi_good_beep": fb.SSIGoodBeep, "feedback.ssi_bad_beep": fb.SSIBadBeep, "feedback.ssi_good_led": fb.SSIGoodLED} {
		if v < 0 || v > 255 {
			return md.fail(field, "%d: use 0 to 255", v)
		}
	}
	for i, u := range md.USB {
		field := fmt.Sprintf("usb[%d]", i)
		switch u.Mode {
		case "serial", "hid-pos", "keyboard":
		default:
			return md.fail(field+".mode", "%q: use serial, hid-pos or keyboard", u.Mode)
		}
		if u.VID == 0 {
			return md.fail(field+".vid", "missing or zero")
		}
	}
	if h := md.HIDPOS; h.ReportLen != 0 || h.DataLen != 0 {
		if h.ReportLen < 8 || h.ReportLen > 1024 {
			return md.fail("hid_pos.report_len", "%d: use 8 to 1024", h.ReportLen)
		}
		for field, off := range map[string]int{"length_offset": h.LengthOffset, "data_offset": h.DataOffset, "aim_offset": h.AIMOffset, "more_offset": h.MoreOffset} {
			if off < 0 || off >= h.ReportLen {
				return md.fail("hid_pos."+field, "%d is outside the %d-byte report", off, h.ReportLen)
			}
		}
		if h.DataLen < 1 || h.DataOffset+h.DataLen > h.ReportLen {
			return md.fail("hid_pos.data_len", "%d bytes from offset %d do not fit the %d-byte report", h.DataLen, h.DataOffset, h.ReportLen)
		}
		if h.AIMOffset > 0 && h.AIMOffset+3 > h.ReportLen {
			return md.fail("hid_pos.aim_offset", "3 AIM bytes at %d do not fit the %d-byte report", h.AIMOffset, h.ReportLen)
		}
	} else if md.Transport == "hid-pos" {
		return md.fail("hid_pos", "missing: a hid-pos model needs its report layout")
	}
	return nil
}

// Match returns the models that present vid:pid, with the interface mode
// each presents it in, in name order. Several models can share ids
// (Honeywell uses the same ones across a family).
func (m Models) Match(vid, pid uint16) []ModelMatch {
	var out []ModelMatch
	for _, name := range m.Names() {
		for _, u := range m[name].USB {
			if uint16(u.VID) == vid && uint16(u.PID) == pid {
				out = append(out, ModelMatch{Model: m[name], Mode: u.Mode})
			}
		}
	}
	return out
}

// ModelMatch is a model and the interface mode a device id means for it.
type ModelMatch struct {
	Model *Model
	Mode  string
}

// usbID returns the ids the model presents in mode.
func (md *Model) usbID(mode string) (USBID, bool) {
	for _, u := range md.USB {
		if u.Mode == mode {
			return u, true
		}
	}
	return USBID{}, false
}

var standardBaud = map[int]bool{1200: true, 2400: true, 4800: true, 9600: true, 19200: true, 38400: true,
	57600: true, 115200: true, 230400: true, 460800: true, 921600: true}

var parities = map[string]struct{}{"none": {}, "odd": {}, "even": {}, "mark": {}, "space": {}}
