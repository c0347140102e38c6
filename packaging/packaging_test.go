package packaging

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gated-dev/gated/gate"
	"github.com/gated-dev/gated/internal/testreq"
)

// repo is the repository root, where the Makefile is.
const repo = ".."

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testreq.Skipf(t, "%s not installed", tool)
		}
	}
}

func makeTarget(t *testing.T, target, dist string) {
	t.Helper()
	cmd := exec.Command("make", "-C", repo, target, "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make %s: %v\n%s", target, err, out)
	}
}

// The packaged default config is a working config once gate: is set, so
// an operator who only sets the gate id gets a valid daemon.
func TestDefaultConfigValidates(t *testing.T) {
	c, err := gate.LoadConfig(filepath.Join(repo, "deploy", "gated.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("deploy/gated.yaml: %v", err)
	}
	if c.Data != "/var/lib/gated" || c.HTTPAddr() != "127.0.0.1:9127" {
		t.Errorf("data %q http %q: the unit's StateDirectory and the loopback status port", c.Data, c.HTTP)
	}
}

// make deb builds a package holding both binaries, both units, every udev
// rule in systemd/, the config as a conffile and the sysusers entry; the
// packaged gated runs.
func TestDeb(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package (a minute the first time)")
	}
	need(t, "make", "dpkg-deb")
	t.Parallel()
	dist := t.TempDir()
	makeTarget(t, "deb", dist)
	debs, _ := filepath.Glob(filepath.Join(dist, "gated_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v", debs)
	}
	out, err := exec.Command("dpkg-deb", "--contents", debs[0]).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb --contents: %v\n%s", err, out)
	}
	want := []string{"./usr/bin/gated", "./usr/bin/gatesync",
		"./lib/systemd/system/gated.service", "./lib/systemd/system/gatesync.service",
		"./etc/gated/gated.yaml", "./usr/lib/sysusers.d/gated.conf", "./usr/share/doc/gated/operations.md"}
	rules, _ := filepath.Glob(filepath.Join(repo, "systemd", "*.rules"))
	for _, r := range rules {
		want = append(want, "./lib/udev/rules.d/"+filepath.Base(r))
	}
	for _, w := range want {
		if !strings.Contains(string(out), " "+w+"\n") {
			t.Errorf("package lacks %s:\n%s", w, out)
		}
	}
	if !strings.Contains(string(out), "rwxr-xr-x root/root") {
		t.Errorf("binaries not executable root-owned:\n%s", out)
	}
	conf, err := exec.Command("dpkg-deb", "--info", debs[0], "conffiles").CombinedOutput()
	if err != nil || !strings.Contains(string(conf), "/etc/gated/gated.yaml") {
		t.Errorf("gated.yaml is not a conffile (local edits would be overwritten): %v %s", err, conf)
	}

	root := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	// The packaged binary reads the packaged config (data pointed at a temp
	// dir: doctor then fails on the empty store, as it should, exit 1).
	r := exec.Command(filepath.Join(root, "usr/bin/gated"), "doctor",
		"--config", filepath.Join(root, "etc/gated/gated.yaml"), "--data", t.TempDir())
	b, err := r.CombinedOutput()
	if !strings.Contains(string(b), "ok    config") || !strings.Contains(string(b), "FAIL  store") {
		t.Errorf("packaged gated doctor with the packaged config: %v\n%s", err, b)
	}
}

// make arm64 cross-builds both binaries with cgo, so USB HID scanners work
// on ARM gate boxes.
func TestARM64(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-builds with cgo (a minute or two the first time)")
	}
	need(t, "make", "aarch64-linux-gnu-gcc")
	t.Parallel()
	dist := t.TempDir()
	makeTarget(t, "arm64", dist)
	for _, name := range []string{"gated", "gatesync"} {
		p := filepath.Join(dist, "linux_arm64", name)
		f, err := elf.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if f.Machine != elf.EM_AARCH64 {
			t.Errorf("%s is for %v, want AArch64", name, f.Machine)
		}
		f.Close()
		info, err := exec.Command("go", "version", "-m", p).CombinedOutput()
		if err != nil {
			t.Fatalf("go version -m: %v\n%s", err, info)
		}
		if !strings.Contains(string(info), "CGO_ENABLED=1") || !strings.Contains(string(info), "GOARCH=arm64") {
			t.Errorf("%s not built with cgo for arm64:\n%s", name, info)
		}
		if name == "gated" && !strings.Contains(string(info), "github.com/karalabe/usb") {
			t.Errorf("gated for arm64 lacks the USB HID driver:\n%s", info)
		}
	}
}
