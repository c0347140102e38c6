// Package headless drives a headless Chromium over the DevTools protocol,
// for tests of gatesync's web pages through a real browser: navigate,
// evaluate JavaScript, wait for a condition, take a screenshot.
//
// It needs /usr/bin/chromium (Debian's chromium package; test.sh installs
// it). Start skips the test when it is missing, unless CI is set, when
// the test fails instead.
package headless

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gated-dev/gated/internal/testreq"
)

// Path is the Chromium binary.
var Path = "/usr/bin/chromium"

// Browser is one headless Chromium with one page. Its methods are safe
// for concurrent use; calls are serialised.
type Browser struct {
	t    testing.TB
	cmd  *exec.Cmd
	once sync.Once

	mu   sync.Mutex
	ws   *websocket.Conn
	next int
	logs []string
}

// Options tune Start; the zero value is the default.
type Options struct {
	// Profile is the user data directory (default: a new temp dir). Pass
	// the same one to a later Start to keep local storage and IndexedDB.
	Profile string
	// Width and Height of the window (default 412x915, a phone).
	Width, Height int
}

var listening = regexp.MustCompile(`DevTools listening on (ws://[^\s]+)`)

// Start launches Chromium on about:blank; t.Cleanup stops it.
func Start(t testing.TB, o *Options) *Browser {
	t.Helper()
	if _, err := os.Stat(Path); err != nil {
		testreq.Skipf(t, "%s: %v (apt-get install chromium)", Path, err)
	}
	var opt Options
	if o != nil {
		opt = *o
	}
	if opt.Profile == "" {
		opt.Profile = t.TempDir()
	}
	if opt.Width == 0 {
		opt.Width, opt.Height = 412, 915
	}
	cmd := exec.Command(Path, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		"--hide-scrollbars", "--force-device-scale-factor=1",
		"--user-data-dir="+opt.Profile, fmt.Sprintf("--window-size=%d,%d", opt.Width, opt.Height),
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group, so close can end its helpers
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b := &Browser{t: t, cmd: cmd}
	t.Cleanup(b.close)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	var browserWS string
	select {
	case browserWS = <-found:
	case <-time.After(30 * time.Second):
		t.Fatal("chromium did not print its DevTools address within 30 s")
	}
	host := strings.SplitN(strings.TrimPrefix(browserWS, "ws://"), "/", 2)[0]
	pageWS, err := pageTarget(host)
	if err != nil {
		t.Fatal(err)
	}
	if b.ws, _, err = websocket.DefaultDialer.Dial(pageWS, nil); err != nil {
		t.Fatalf("connect to chromium's page: %v", err)
	}
	b.ws.SetReadLimit(64 << 20)
	if _, err := b.call("Runtime.enable", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.call("Page.enable", nil); err != nil {
		t.Fatal(err)
	}
	// Headless windows have a minimum width; the viewport is set exactly.
	if _, err := b.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": opt.Width, "height": opt.Height,
		"deviceScaleFactor": 1, "mobile": opt.Width < 800}); err != nil {
		t.Fatal(err)
	}
	return b
}

func pageTarget(host string) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := http.Get("http://" + host + "/json/list")
		if err == nil {
			var ts []struct{ Type, WebSocketDebuggerURL string }
			err = json.NewDecoder(r.Body).Decode(&ts)
			r.Body.Close()
			for _, tg := range ts {
				if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
					return tg.WebSocketDebuggerURL, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("chromium at %s shows no page target: %v", host, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// close stops Chromium with SIGTERM, so it writes its profile out (local
// storage and IndexedDB), and kills it if it takes more than 10 s.
func (b *Browser) close() {
	b.once.Do(func() {
		if b.ws != nil {
			b.ws.Close()
		}
		done := make(chan struct{})
		go func() { b.cmd.Wait(); close(done) }()
		b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			b.cmd.Process.Kill()
			<-done
		}
		// Its helper processes may outlive it for a moment, still writing
		// into the profile: end the rest of its process group and wait.
		pgid := b.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGKILL)
		for i := 0; i < 250 && groupAlive(pgid); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// Close stops Chromium now (it also stops at the test's end); its
// profile stays for a later Start.
func (b *Browser) Close() { b.close() }

type message struct {
	ID     int             `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params"`
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// call sends one DevTools command and waits for its answer, noting
// console output and uncaught exceptions on the way.
func (b *Browser) call(method string, params any) (json.RawMessage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	id := b.next
	if params == nil {
		params = struct{}{}
	}
	b.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := b.ws.WriteJSON(map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	b.ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		var m message
		if err := b.ws.ReadJSON(&m); err != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		switch {
		case m.ID == id && m.Error != nil:
			return nil, fmt.Errorf("%s: %s", method, m.Error.Message)
		case m.ID == id:
			return m.Result, nil
		case m.Method == "Runtime.consoleAPICalled" || m.Method == "Runtime.exceptionThrown":
			b.logs = append(b.logs, m.Method+" "+string(m.Params))
		}
	}
}

// Logs returns the page's console output and uncaught exceptions so far.
func (b *Browser) Logs() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.logs, "\n")
}

// Navigate loads url and waits until the document has loaded.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	if _, err := b.call("Page.navigate", map[string]any{"url": url}); err != nil {
		b.t.Fatal(err)
	}
	b.WaitFor(`document.readyState === "complete" && location.href !== "about:blank"`, 20*time.Second)
}

// Eval evaluates a JavaScript expression, awaiting a promise, and
// unmarshals its value into out (when out is not nil).
func (b *Browser) Eval(expr string, out any) error {
	res, err := b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true})
	if err != nil {
		return err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if e := r.ExceptionDetails; e != nil {
		return fmt.Errorf("javascript: %s %s", e.Text, e.Exception.Description)
	}
	if out == nil || len(r.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(r.Result.Value, out)
}

// WaitFor polls a JavaScript condition every 20 ms until it is true.
func (b *Browser) WaitFor(cond string, timeout time.Duration) {
	b.t.Helper()
	if err := b.Poll(cond, timeout); err != nil {
		b.t.Fatalf("%v\npage console:\n%s", err, b.Logs())
	}
}

// ErrTimeout is Poll's error when the condition stayed false.
var ErrTimeout = errors.New("timed out")

// Poll is WaitFor returning an error instead of failing the test.
func (b *Browser) Poll(cond string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		err := b.Eval("!!("+cond+")", &ok)
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %s waiting for %s (last error: %v)", ErrTimeout, timeout, cond, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Screenshot captures the viewport as an image.
func (b *Browser) Screenshot() image.Image {
	b.t.Helper()
	res, err := b.call("Page.captureScreenshot", map[string]any{"format": "png"})
	if err != nil {
		b.t.Fatal(err)
	}
	var r struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		b.t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		b.t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		b.t.Fatal(err)
	}
	return img
}

// groupAlive reports whether a process of group pgid is still running
// (zombies, which nobody may reap in a container, do not count).
func groupAlive(pgid int) bool {
	ds, _ := os.ReadDir("/proc")
	for _, d := range ds {
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}
