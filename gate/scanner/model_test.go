package scanner_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gated-dev/gated/gate/scanner"
)

func TestBuiltInModels(t *testing.T) {
	m := models(t)
	if len(m) < 6 {
		t.Fatalf("%d built-in models, want at least 6", len(m))
	}
	vendors := map[string]bool{}
	for _, name := range m.Names() {
		md := m[name]
		vendors[md.Vendor] = true
		if len(md.Setup) == 0 {
			t.Errorf("%s: no setup steps", name)
		}
		if len(md.USB) == 0 {
			t.Errorf("%s: no USB ids", name)
		}
	}
	for _, v := range []string{"Honeywell", "Zebra", "Newland", "Datalogic"} {
		if !vendors[v] {
			t.Errorf("no %s model", v)
		}
	}
}

const goodModel = `name: test-scanner
vendor: Test
product: T1
transport: serial
serial: {baud: 115200}
framing: {protocol: terminator, terminator: "0d 0a", aim: true}
feedback: {good: "1b 61", bad: "1b 62"}
`

// TestModelErrors checks that a broken model file is refused with its
// file, the field and the reason.
func TestModelErrors(t *testing.T) {
	for _, tc := range []struct {
		name, change, field, reason string
	}{
		{"bad baud", "serial: {baud: 12345}", "serial.baud", "not a standard rate"},
		{"bad parity", "serial: {baud: 9600, parity: maybe}", "serial.parity", "use none, odd"},
		{"bad protocol", `framing: {protocol: morse}`, "framing.protocol", `"morse": use terminator or ssi`},
		{"bad hex", `feedback: {good: "1b zz"}`, "at line", "not hex bytes"},
		{"unknown key", "colour: red", "at line", "field colour not found"},
		{"no transport", "transport: \"\"", "transport", "missing"},
		{"usb without vid", `usb: [{mode: serial, pid: "0001"}]`, "usb[0].vid", "missing or zero"},
		{"usb bad mode", `usb: [{mode: bluetooth, vid: "0001"}]`, "usb[0].mode", "use serial, hid-pos or keyboard"},
		{"hid layout overflow", "hid_pos: {report_id: 2, report_len: 16, data_offset: 2, data_len: 20, more_offset: 15}", "hid_pos.data_len", "do not fit"},
		{"ssi with raw feedback", "framing: {protocol: ssi}", "feedback.good", "do not apply to ssi"},
		{"name differs", "name: other", "name", "differs from the file name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "test-scanner.yaml")
			// Later keys replace earlier ones: drop the line the change replaces.
			key := strings.SplitN(tc.change, ":", 2)[0]
			var lines []string
			for _, l := range strings.Split(goodModel, "\n") {
				if !strings.HasPrefix(l, key+":") {
					lines = append(lines, l)
				}
			}
			body := strings.Join(lines, "\n") + "\n" + tc.change + "\n"
			if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := scanner.LoadModels(dir)
			var me *scanner.ModelError
			if !errors.As(err, &me) {
				t.Fatalf("LoadModels = %v, want a ModelError", err)
			}
			if me.File != file || !strings.HasPrefix(me.Field, tc.field) || !strings.Contains(me.Reason, tc.reason) {
				t.Errorf("error %q: file %q field %q reason %q; want %s, %s, %s", err, me.File, me.Field, me.Reason, file, tc.field, tc.reason)
			}
		})
	}
}

func TestModelsFromDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "test-scanner.yaml"), []byte(goodModel), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := scanner.LoadModels(dir)
	if err != nil {
		t.Fatal(err)
	}
	md := m["test-scanner"]
	if md == nil || string(md.Framing.Terminator) != "\r\n" || md.Serial.DataBits != 8 || md.Serial.Parity != "none" {
		t.Fatalf("model %+v", md)
	}
	if m["zebra-ds2208"] == nil {
		t.Error("built-in models lost when a directory is added")
	}
	if _, err := scanner.LoadModels(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "models directory") {
		t.Errorf("missing directory: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	m := models(t)
	for _, tc := range []struct{ uri, want string }{
		{"serial:", "no device path"},
		{"serial:/dev/ttyACM0", "no ?model=NAME; known models: datalogic-qd2430"},
		{"serial:/dev/ttyACM0?model=honeywell-xenon-1950g&baud=fast", `baud="fast": want a number`},
		{"serial:/dev/ttyACM0?model=honeywell-xenon-1950g&baud=1234", "serial.baud: 1234 is not a standard rate"},
		{"bluetooth:x", `unknown kind "bluetooth"`},
		{"nonsense", "want a URI such as"},
	} {
		_, err := scanner.Open(tc.uri, scanner.Env{Models: m})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", tc.uri, err, tc.want)
		}
	}
	src, err := scanner.Open("serial:/dev/ttyACM0?model=honeywell-xenon-1950g&baud=9600", scanner.Env{Models: m})
	if err != nil || src.Name() != "serial:/dev/ttyACM0" {
		t.Fatalf("Open = %v, %v", src, err)
	}
	if m["honeywell-xenon-1950g"].Serial.Baud != 115200 {
		t.Error("a query override changed the shared model")
	}
}

// FuzzParseModel: any bytes as a model file give a model or an error, never a panic.
func FuzzParseModel(f *testing.F) {
	f.Add([]byte(goodModel))
	f.Add([]byte("hid_pos: {report_len: 8, data_len: 7, data_offset: 1}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		scanner.ParseModel("fuzz.yaml", b)
	})
}
