package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gatedExit runs the gated binary and returns its exit code and output.
func gatedExit(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	bin := buildScannerTools(t)
	cmd := exec.Command(filepath.Join(bin, "gated"), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, stdout.String(), stderr.String()
}

func TestScannersCommand(t *testing.T) {
	code, out, errOut := gatedExit(t, "scanners")
	if code != 0 {
		t.Fatalf("gated scanners: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"MODELS", "honeywell-xenon-1950g", "zebra-ds9308", "newland-fm430", "datalogic-qd2430",
		"05e0:1701 (serial)", "SERIAL PORTS", "USB HID DEVICES"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code, _, errOut := gatedExit(t, "scanners", "extra"); code != 2 || !strings.Contains(errOut, "unexpected argument") {
		t.Errorf("gated scanners extra: exit %d, %s", code, errOut)
	}
}

// TestBrokenModelRefused: a model file with an error stops gated at start
// with the file, the field and the reason, both in `gated scanners` and
// in `gated run`.
func TestBrokenModelRefused(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "my-scanner.yaml")
	body := "name: my-scanner\nvendor: X\nproduct: Y\ntransport: serial\nserial: {baud: 11520}\n"
	if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "model file " + file + ": field serial.baud: 11520 is not a standard rate"
	code, _, errOut := gatedExit(t, "scanners", "--models", dir)
	if code != 2 || !strings.Contains(errOut, want) {
		t.Errorf("gated scanners --models: exit %d, stderr %q; want 2 and %q", code, errOut, want)
	}
	tg := newTicketGate(t, 1, false)
	code, _, errOut = gatedExit(t, "run", "--data", tg.data, "--gate", "G1",
		"--scanner", "serial:/dev/ttyACM0?model=my-scanner&models="+dir)
	if code != 2 || !strings.Contains(errOut, want) {
		t.Errorf("gated run: exit %d, stderr %q; want 2 and %q", code, errOut, want)
	}
}
