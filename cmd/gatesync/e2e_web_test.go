package main

// The web pages through the real binaries: gatesync serve with its
// embedded broker, a gated syncing to it, and headless Chromium showing
// the ticket page on a "phone" and the dashboard on an operator's screen.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"github.com/gated-dev/gated/internal/lockedbuf"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/ticketpage/headless"
	"github.com/gated-dev/gated/qr"
	"github.com/gated-dev/gated/verify"
)

var (
	webBinOnce sync.Once
	webBinDir  string
	webBinErr  error
)

// webBins builds gated and gatesync once for the web tests.
func webBins(t *testing.T) string {
	t.Helper()
	webBinOnce.Do(func() {
		webBinDir, webBinErr = os.MkdirTemp("", "gatesync-web-bin")
		for name, pkg := range map[string]string{"gated": "../gated", "gatesync": "."} {
			if webBinErr != nil {
				return
			}
			out, err := exec.Command("go", "build", "-o", filepath.Join(webBinDir, name), pkg).CombinedOutput()
			if err != nil {
				webBinErr = fmt.Errorf("build %s: %v\n%s", name, err, out)
			}
		}
	})
	if webBinErr != nil {
		t.Fatal(webBinErr)
	}
	return webBinDir
}

func webRun(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("%s %s: %v %s", filepath.Base(bin), strings.Join(args, " "), err, msg)
	}
	return string(out)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type webDecision struct {
	Verdict, Reason, Ticket string
	At                      time.Time
}

// TestWebTicketAndDashboard: a rotating ticket's page binds a key made in
// Chromium; its code, read off a screenshot by gated's decoder, is refused
// by a real gated with its defaults when 60 s old and admitted when fresh;
// the admission reaches the open dashboard within 2 s.
func TestWebTicketAndDashboard(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the binaries and runs two Chromiums")
	}
	bins := webBins(t)
	gatesync, gated := filepath.Join(bins, "gatesync"), filepath.Join(bins, "gated")
	dir := t.TempDir()
	cdir, gdir, bundle := filepath.Join(dir, "centre"), filepath.Join(dir, "gate"), filepath.Join(dir, "bundle.json")
	webRun(t, gatesync, "init", "--dir", cdir)
	rotCode := strings.TrimSpace(webRun(t, gatesync, "issue", "--dir", cdir, "--event", "E", "--count", "1", "--rotating"))
	tok, err := verify.Parse([]byte(rotCode))
	if err != nil {
		t.Fatal(err)
	}
	ticket := tok.Credential.Ticket.String()
	webRun(t, gatesync, "export", "--dir", cdir, "--event", "E", "--out", bundle)
	webRun(t, gated, "provision", "--data", gdir, bundle)
	f := strings.Fields(webRun(t, gatesync, "add-gate", "--dir", cdir, "--venue", "arena", "--gate", "g1"))
	pass := f[len(f)-1]
	tokb, _ := os.ReadFile(filepath.Join(cdir, "api.token"))
	apiToken := strings.TrimSpace(string(tokb))
	httpPort, mqttPort := freePort(t), freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)

	serve := exec.Command(gatesync, "serve", "--dir", cdir, "--listen", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--mqtt-listen", fmt.Sprintf("127.0.0.1:%d", mqttPort))
	serveLog := &lockedbuf.Buffer{}
	serve.Stderr = serveLog
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { serve.Process.Kill(); serve.Wait() })
	waitUntil(t, 10*time.Second, "gatesync serve answers", func() bool {
		r, err := http.Get(base + "/healthz")
		if err == nil {
			r.Body.Close()
		}
		return err == nil
	})

	// gated with its defaults: rotating codes older than 30 s are stale.
	gate := exec.Command(gated, "run", "--data", gdir, "--gate", "g1", "--venue", "arena", "--output", "json",
		"--broker", fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort), "--username", "g1", "--password", pass)
	stdin, _ := gate.StdinPipe()
	stdout, _ := gate.StdoutPipe()
	gateLog := &lockedbuf.Buffer{}
	gate.Stderr = gateLog
	if err := gate.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gate.Process.Kill(); gate.Wait() })
	decisions := make(chan webDecision, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var d webDecision
			if json.Unmarshal(sc.Bytes(), &d) == nil {
				decisions <- d
			}
		}
	}()
	scan := func(code string) webDecision {
		t.Helper()
		io.WriteString(stdin, code+"\n")
		select {
		case d := <-decisions:
			return d
		case <-time.After(10 * time.Second):
			t.Fatalf("gated printed no decision\n%s", gateLog.String())
		}
		return webDecision{}
	}

	// The operator's dashboard, open before anything happens.
	dash := headless.Start(t, &headless.Options{Width: 1400, Height: 800})
	dash.Navigate(base + "/dashboard/?token=" + apiToken)
	dash.WaitFor(`document.querySelector('tr[data-gate="arena/g1"] td:nth-child(3)')?.textContent === "online"`, 15*time.Second)

	// The phone: the ticket's link, from the API.
	req, _ := http.NewRequest("GET", base+"/api/v1/tickets/"+ticket+"/link", nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var link struct{ Path string }
	json.NewDecoder(resp.Body).Decode(&link)
	resp.Body.Close()
	preKey, err := centre.ReadPrivateKey(filepath.Join(cdir, centre.DevicesDir, ticket+".key"))
	if err != nil {
		t.Fatal(err)
	}
	phone := headless.Start(t, nil)
	phone.Navigate(base + link.Path)
	phone.WaitFor(`document.getElementById("ticket").dataset.ready || document.getElementById("ticket").dataset.error`, 15*time.Second)
	var pageErr string
	phone.Eval(`document.getElementById("ticket").dataset.error || ""`, &pageErr)
	if pageErr != "" {
		t.Fatalf("ticket page: %s\n%s\ngatesync:\n%s", pageErr, phone.Logs(), serveLog)
	}
	read := func() string {
		t.Helper()
		code, err := qr.NewReader(nil).Decode(phone.Screenshot())
		if err != nil {
			t.Fatalf("decode the phone's screenshot: %v", err)
		}
		return code
	}
	first := read()
	if !strings.HasPrefix(first, verify.PrefixRotating) {
		t.Fatalf("the page shows %q", first)
	}
	// refresh has the page draw its next code (its 15 s refresh, brought
	// forward) with its clock shifted by shift seconds, and reads it off a
	// screenshot.
	refresh := func(shift int) string {
		t.Helper()
		before, _ := json.Marshal(read())
		phone.Eval(fmt.Sprintf(`(() => { window.realNow ??= Date.now; Date.now = () => window.realNow.call(Date) + %d * 1000; })()`, shift), nil)
		phone.Eval(`document.dispatchEvent(new Event("visibilitychange"))`, nil)
		phone.WaitFor(fmt.Sprintf(`document.getElementById("qr").dataset.code !== %s`, before), 5*time.Second)
		return read()
	}

	// A screenshot taken 60 s ago shows a code the page signed 60 s ago:
	// the page's clock set back 60 s makes exactly that code.
	old := refresh(-60)
	ot, err := verify.Parse([]byte(old))
	if err != nil {
		t.Fatalf("the code drawn with the clock 60 s back: %v", err)
	}
	if age := time.Since(ot.CodeTime); age < 55*time.Second || age > 70*time.Second {
		t.Fatalf("the code drawn with the clock 60 s back was signed %s ago", age)
	}
	if d := scan(old); d.Verdict != "deny" || d.Reason != "stale_code" {
		t.Fatalf("a code 60 s old: %+v, want deny stale_code", d)
	}
	fresh := refresh(0)
	d := scan(fresh)
	admitted := time.Now()
	if d.Verdict != "admit" || d.Reason != "ok" || d.Ticket != ticket {
		t.Fatalf("the fresh code: %+v, want admit ok for %s", d, ticket)
	}
	// A fresh code of the centre-held key the ticket had before the phone
	// took it over carries serial 1: the phone's serial 2 supersedes it.
	preCode, err := verify.RotatingCode(tok.Credential.Raw(), preKey, time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	if d := scan(preCode); d.Verdict != "deny" || d.Reason != "superseded_serial" {
		t.Fatalf("a fresh code of the key before the binding: %+v, want deny superseded_serial", d)
	}

	err = dash.Poll(`document.querySelector('tr[data-gate="arena/g1"]').dataset.admitted === "1"`, 2*time.Second)
	if err != nil {
		var row string
		dash.Eval(`document.querySelector('tr[data-gate="arena/g1"]').outerHTML`, &row)
		t.Fatalf("the admission did not reach the dashboard within 2 s: %v\n%s\ngated:\n%s", err, row, gateLog.String())
	}
	t.Logf("admission at gated to the dashboard: %s", time.Since(admitted).Round(time.Millisecond))
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
