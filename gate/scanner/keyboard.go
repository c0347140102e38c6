package scanner

import (
	"bytes"
	"sort"
)

// Layout maps USB HID keyboard usage codes to what a keyboard layout types.
// A keyboard-wedge scanner "types" on the layout it is programmed for, so
// gated must decode with the same one.
type Layout struct {
	Name  string
	Plain map[byte]string
	Shift map[byte]string
	AltGr map[byte]string
}

// Layouts are the keyboard layouts ?layout= can name.
var Layouts = map[string]*Layout{"us": layoutUS(), "de": layoutDE()}

func layoutNames() []string {
	var n []string
	for k := range Layouts {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func letters(plain, shift map[byte]string) {
	for i := byte(0); i < 26; i++ {
		plain[0x04+i] = string(rune('a' + i))
		shift[0x04+i] = string(rune('A' + i))
	}
	plain[0x2c], shift[0x2c] = " ", " "
	for i, c := range "1234567890" {
		plain[0x1e+byte(i)] = string(c)
	}
}

func layoutUS() *Layout {
	l := &Layout{Name: "us", Plain: map[byte]string{}, Shift: map[byte]string{}, AltGr: map[byte]string{}}
	letters(l.Plain, l.Shift)
	for i, c := range "!@#$%^&*()" {
		l.Shift[0x1e+byte(i)] = string(c)
	}
	for k, pair := range map[byte]string{0x2d: "-_", 0x2e: "=+", 0x2f: "[{", 0x30: "]}", 0x31: `\|`, 0x32: `\|`,
		0x33: ";:", 0x34: `'"`, 0x35: "`~", 0x36: ",<", 0x37: ".>", 0x38: "/?"} {
		l.Plain[k], l.Shift[k] = pair[:1], pair[1:]
	}
	return l
}

// layoutDE is German QWERTZ: Y and Z swapped, symbols moved, and ] [ { } \ @
// behind AltGr (an AIM identifier's ']' is AltGr+9).
func layoutDE() *Layout {
	l := &Layout{Name: "de", Plain: map[byte]string{}, Shift: map[byte]string{}, AltGr: map[byte]string{}}
	letters(l.Plain, l.Shift)
	l.Plain[0x1c], l.Shift[0x1c] = "z", "Z"
	l.Plain[0x1d], l.Shift[0x1d] = "y", "Y"
	for i, c := range []string{"!", `"`, "§", "$", "%", "&", "/", "(", ")", "="} {
		l.Shift[0x1e+byte(i)] = c
	}
	for k, pair := range map[byte][2]string{0x2d: {"ß", "?"}, 0x2e: {"´", "`"}, 0x2f: {"ü", "Ü"}, 0x30: {"+", "*"},
		0x31: {"#", "'"}, 0x32: {"#", "'"}, 0x33: {"ö", "Ö"}, 0x34: {"ä", "Ä"}, 0x35: {"^", "°"},
		0x36: {",", ";"}, 0x37: {".", ":"}, 0x38: {"-", "_"}, 0x64: {"<", ">"}} {
		l.Plain[k], l.Shift[k] = pair[0], pair[1]
	}
	for k, c := range map[byte]string{0x14: "@", 0x24: "{", 0x25: "[", 0x26: "]", 0x27: "}", 0x2d: `\`, 0x30: "~", 0x64: "|", 0x08: "€"} {
		l.AltGr[k] = c
	}
	return l
}

const (
	keyEnter    = 0x28
	keyPadEnter = 0x58
	modShift    = 0x02 | 0x20
	modAltGr    = 0x40
)

// keyboardDecoder turns keyboard boot reports (modifiers, reserved, six
// key codes) into reads ended by Enter. A key counts when it goes down, so
// a held key or a repeated report does not type twice.
type keyboardDecoder struct {
	layout *Layout
	max    int
	down   [256]bool
	buf    []byte
	over   bool
	lost   bool // a key had no meaning in the layout: the read is unreliable
}

func (d *keyboardDecoder) report(r []byte) []frame {
	if len(r) == 9 {
		r = r[1:] // a numbered report: drop the report id
	}
	if len(r) != 8 {
		return nil
	}
	mods := r[0]
	var now [256]bool
	var out []frame
	for _, k := range r[2:] {
		if k <= 0x03 { // none, or the keyboard's error codes
			continue
		}
		now[k] = true
		if d.down[k] {
			continue
		}
		if k == keyEnter || k == keyPadEnter {
			out = d.emit(out)
			continue
		}
		var s string
		var ok bool
		switch {
		case mods&modAltGr != 0:
			s, ok = d.layout.AltGr[k]
		case mods&modShift != 0:
			s, ok = d.layout.Shift[k]
		default:
			s, ok = d.layout.Plain[k]
		}
		if !ok {
			d.lost = true
			continue
		}
		if !d.over {
			d.buf = append(d.buf, s...)
			if len(d.buf) > d.max {
				d.buf, d.over = d.buf[:d.max], true
			}
		}
	}
	d.down = now
	return out
}

func (d *keyboardDecoder) emit(out []frame) []frame {
	f := frame{truncated: d.over}
	b := d.buf
	if isAIM(b) {
		f.symbology, b = string(b[:3]), b[3:]
	}
	if d.lost {
		// A key the layout cannot type: mark it so the read is denied as
		// malformed rather than passed on with a character missing.
		f.truncated = true
	}
	f.data = bytes.Clone(b)
	d.buf, d.over, d.lost = d.buf[:0], false, false
	if len(f.data) == 0 {
		return out
	}
	return append(out, f)
}
