package dashboard_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/centretest"
	"github.com/gated-dev/gated/centre/dashboard"
	"github.com/gated-dev/gated/centre/ingesttest"
	"github.com/gated-dev/gated/internal/testreq"
	"github.com/gated-dev/gated/verify"
)

// smallDisk mounts a tmpfs of size bytes for the test (root only).
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		testreq.Skipf(t, "needs a tmpfs (run as root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes path until the disk is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

// TestCentreDiskFull fills the disk under central.db: ingest fails, so
// /healthz answers 503 with the reason and the dashboard shows a critical
// alert; once space is freed and a commit succeeds, both recover.
func TestCentreDiskFull(t *testing.T) {
	dir := filepath.Join(smallDisk(t, 4<<20), "centre")
	c := centretest.New(t, dir)
	token, err := centre.CreateAPIToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := dashboard.New(c, dashboard.Options{Token: token, Every: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	mux := http.NewServeMux()
	mux.Handle("/", centre.NewAPI(c, token, nil))
	d.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer watch(ctx, srv.URL, token)()

	seqs := func(from uint64) []uint64 {
		s := make([]uint64, 500)
		for i := range s {
			s[i] = from + uint64(i)
		}
		return s
	}
	var tk verify.TicketID
	if _, err := c.Ingest("v", ingesttest.Batch(t, "g1", "i1", tk, "deny", "revoked", seqs(1)...)); err != nil {
		t.Fatal(err)
	}
	check(t, srv.URL, token, 200, "")

	filler := filepath.Join(filepath.Dir(dir), "filler")
	fill(t, filler)
	var ingestErr error
	for from := uint64(501); ingestErr == nil && from < 20000; from += 500 {
		_, ingestErr = c.Ingest("v", ingesttest.Batch(t, "g1", "i1", tk, "deny", "revoked", seqs(from)...))
	}
	if ingestErr == nil {
		t.Fatal("ingest never failed on a full disk")
	}
	check(t, srv.URL, token, 503, "no space left on device")

	os.Remove(filler)
	if _, err := c.Ingest("v", ingesttest.Batch(t, "g1", "i1", tk, "deny", "revoked", seqs(30000)...)); err != nil {
		t.Fatalf("ingest with space again: %v", err)
	}
	check(t, srv.URL, token, 200, "")
}

// check waits for /healthz to answer code (with want in its body) and the
// dashboard to show a critical centre alert exactly when code is 503.
func check(t *testing.T, base, token string, code int, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := http.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		req, _ := http.NewRequest("GET", base+"/dashboard/state.json", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		sr, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var st dashboard.State
		json.NewDecoder(sr.Body).Decode(&st)
		sr.Body.Close()
		alert := ""
		for _, a := range st.Alerts {
			if a.Level == "critical" && strings.HasPrefix(a.Text, "centre: ") {
				alert = a.Text
			}
		}
		ok := r.StatusCode == code && strings.Contains(string(body), want) && (alert != "") == (code == 503) &&
			strings.Contains(alert, want)
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz %d %q, dashboard alert %q; want %d with %q", r.StatusCode, body, alert, code, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLockedGateAlert: a gate whose login the operator locked shows as an
// alert until it is unlocked.
func TestLockedGateAlert(t *testing.T) {
	dir := t.TempDir()
	c := centretest.New(t, dir)
	if _, err := c.AddGateUser("arena", "g1"); err != nil {
		t.Fatal(err)
	}
	if err := c.NoteGate("arena", "g1", "E"); err != nil {
		t.Fatal(err)
	}
	d, err := dashboard.New(c, dashboard.Options{Token: "t", Every: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	mux := http.NewServeMux()
	d.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer watch(ctx, srv.URL, "t")()
	locked := func() bool {
		req, _ := http.NewRequest("GET", srv.URL+"/dashboard/state.json", nil)
		req.Header.Set("Authorization", "Bearer t")
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var st dashboard.State
		json.NewDecoder(r.Body).Decode(&st)
		for _, a := range st.Alerts {
			if a.Gate == "arena/g1" && strings.Contains(a.Text, "login locked") {
				return true
			}
		}
		return false
	}
	for _, lock := range []bool{true, false} {
		if err := c.LockGate("arena", "g1", lock); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); locked() != lock; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("locked %v: the dashboard says %v", lock, !lock)
			}
		}
	}
}

// watch opens the event stream until the returned function closes it (before
// the server is closed, which waits for it): an open page makes the poller
// read every Options.Every instead of every 5 s.
func watch(ctx context.Context, base, token string) (stop func()) {
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/dashboard/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		return func() {}
	}
	return func() { r.Body.Close() }
}
