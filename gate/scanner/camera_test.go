package scanner_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/scanner"
	"github.com/gated-dev/gated/qr"
)

// frame renders text as a QR code on a 640x360 grey scene, as a camera
// would see it; "" gives an empty scene. (Small, so -race stays quick.)
func frame(t testing.TB, text string) image.Image {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 640, 360))
	for i := range img.Pix {
		img.Pix[i] = 200
	}
	if text != "" {
		code, err := qr.Image(text, 300)
		if err != nil {
			t.Fatal(err)
		}
		b := code.Bounds()
		for y := 0; y < b.Dy(); y++ {
			for x := 0; x < b.Dx(); x++ {
				img.Set(170+x, 30+y, code.At(b.Min.X+x, b.Min.Y+y))
			}
		}
	}
	return img
}

func writeFrame(t testing.TB, path, text string) {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, frame(t, text)); err != nil {
		t.Fatal(err)
	}
	// Write then rename, as a camera dropping frames as files should.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path))
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// runUntil runs src and returns the first n scans' data. It fails,
// rather than hang, when a source blocks (on a FIFO, say) for 20s.
func runUntil(t *testing.T, src scanner.Source, n int) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan scanner.Scan)
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, out) }()
	var got []string
	timeout := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case s := <-out:
			got = append(got, string(s.Data))
		case <-timeout:
			t.Fatalf("after 20s: scans %q, want %d", got, n)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	return got
}

// TestDirHeldInView: frames in name order; a code held across frames counts
// once, a missed frame or two does not make it new, leaving the view does;
// files that appear later are read too; a file that is no image is passed over.
func TestDirHeldInView(t *testing.T) {
	dir := t.TempDir()
	seq := []string{"A", "A", "", "A", "B", "B", "", "", "", "A", "A"}
	for i, s := range seq {
		writeFrame(t, filepath.Join(dir, fmt.Sprintf("f%03d.png", i)), s)
	}
	os.WriteFile(filepath.Join(dir, "f005b.png"), []byte("not a png"), 0o644)
	src, err := scanner.Open("dir:"+dir+"?leave=3&poll=10ms", scanner.Env{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan scanner.Scan)
	go src.Run(ctx, out)
	var got []string
	for len(got) < 3 {
		s := <-out
		if s.Source != "dir:"+dir || s.Symbology != "]Q1" {
			t.Errorf("scan %+v", s)
		}
		got = append(got, string(s.Data))
	}
	// A file that appears later is picked up.
	writeFrame(t, filepath.Join(dir, "g000.png"), "C")
	got = append(got, string((<-out).Data))
	if want := "A B A C"; strings.Join(got, " ") != want {
		t.Errorf("scans %q, want %q", got, want)
	}
}

// TestDirDelete: with delete=true each frame file is removed once read.
func TestDirDelete(t *testing.T) {
	dir := t.TempDir()
	writeFrame(t, filepath.Join(dir, "a.png"), "D1")
	writeFrame(t, filepath.Join(dir, "b.png"), "")
	src, err := scanner.Open("dir:"+dir+"?delete=true&poll=10ms&leave=1", scanner.Env{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan scanner.Scan)
	go src.Run(ctx, out)
	if s := <-out; string(s.Data) != "D1" {
		t.Fatalf("scan %q", s.Data)
	}
	// b.png (no code) made D1 leave the view (leave=1): D1 again is a new scan.
	writeFrame(t, filepath.Join(dir, "c.png"), "D1")
	if s := <-out; string(s.Data) != "D1" {
		t.Fatalf("scan %q", s.Data)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.png")); !os.IsNotExist(err) {
		t.Errorf("a.png still there after it was read: %v", err)
	}
}

// TestMJPEG serves an MJPEG stream over HTTP as an IP camera does.
func TestMJPEG(t *testing.T) {
	var parts [][]byte
	for _, s := range []string{"", "X1", "X1", "", "", "", "X2"} {
		var b bytes.Buffer
		jpeg.Encode(&b, frame(t, s), &jpeg.Options{Quality: 80})
		parts = append(parts, b.Bytes())
	}
	srv := serveMJPEG(t, "--", parts...)
	defer srv.Close()
	src, err := scanner.Open("mjpeg:"+srv.URL+"/video?x=1", scanner.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if src.Name() != "mjpeg:"+srv.URL+"/video?x=1" {
		t.Errorf("name %q", src.Name())
	}
	if got := runUntil(t, src, 2); strings.Join(got, " ") != "X1 X2" {
		t.Errorf("scans %q, want X1 X2", got)
	}
}

// serveMJPEG serves parts as an IP camera's MJPEG stream, then keeps the
// stream open as a camera does. dashes go before the boundary parameter
// (some cameras write them).
func serveMJPEG(t testing.TB, dashes string, parts ...[]byte) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mw := multipart.NewWriter(w)
		w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary="+dashes+mw.Boundary())
		for _, b := range parts {
			p, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"image/jpeg"}})
			p.Write(b)
			w.(http.Flusher).Flush()
		}
		// A part ends where the next begins: start one more.
		mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"image/jpeg"}})
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
}

func TestCameraOpenErrors(t *testing.T) {
	for _, tc := range []struct{ uri, want string }{
		{"mjpeg:ftp://cam/x", "want mjpeg:http://HOST/PATH"},
		{"dir:", "no directory"},
		{"dir:/tmp?leave=0", "leave=\"0\""},
		{"camera:", "no device"},
	} {
		_, err := scanner.Open(tc.uri, scanner.Env{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want an error containing %q", tc.uri, err, tc.want)
		}
	}
}
