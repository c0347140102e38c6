package scanner_test

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/jpeg"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/scanner"
	"github.com/gated-dev/gated/internal/lockedbuf"
)

// bombPNG is a PNG header claiming w x h grey pixels followed by a little
// compressed zero data: a few hundred bytes that a decoder without a size
// check answers by allocating w*h bytes.
func bombPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 8, 0 // 8-bit greyscale
	chunk("IHDR", ihdr)
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(make([]byte, 1<<20))
	zw.Close()
	chunk("IDAT", z.Bytes())
	chunk("IEND", nil)
	return b.Bytes()
}

// bombJPEG is a small JPEG whose frame header claims w x h.
func bombJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	jpeg.Encode(&b, image.NewGray(image.Rect(0, 0, 16, 16)), nil)
	p := b.Bytes()
	i := bytes.Index(p, []byte{0xff, 0xc0}) // SOF0: length, precision, height, width
	if i < 0 {
		t.Fatal("no SOF0 in the encoded JPEG")
	}
	binary.BigEndian.PutUint16(p[i+5:], uint16(h))
	binary.BigEndian.PutUint16(p[i+7:], uint16(w))
	return p
}

// bigFrame is a valid QR frame of w x h, as a PNG.
func bigFrame(t testing.TB, text string, w, h int) []byte {
	t.Helper()
	small := frame(t, text)
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = 200
	}
	for y := 0; y < small.Bounds().Dy(); y++ {
		for x := 0; x < small.Bounds().Dx(); x++ {
			img.Set(x, y, small.At(x, y))
		}
	}
	var b bytes.Buffer
	jpeg.Encode(&b, img, &jpeg.Options{Quality: 90})
	return b.Bytes()
}

func logTo(buf *lockedbuf.Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(buf, nil)) }

// TestDirRefusesHostileFiles puts a decompression bomb, a JPEG claiming
// 30000x30000, a frame larger than the configured cap, a FIFO, a device
// node and a symlink to a frame outside the directory in front of a good
// frame: the good frame is read, nothing else is, each refused file is
// moved aside and logged once, and a second source on the same directory
// finds nothing left to refuse.
func TestDirRefusesHostileFiles(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(dir, "a-bomb.png"), bombPNG(t, 30000, 30000), 0o644)
	os.WriteFile(filepath.Join(dir, "b-bomb.jpg"), bombJPEG(t, 30000, 30000), 0o644)
	os.WriteFile(filepath.Join(dir, "c-big.jpg"), bigFrame(t, "BIG", 1200, 1000), 0o644)
	if err := syscall.Mkfifo(filepath.Join(dir, "d-fifo.png"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeFrame(t, filepath.Join(outside, "secret.png"), "SECRET")
	if err := os.Symlink(filepath.Join(outside, "secret.png"), filepath.Join(dir, "e-link.png")); err != nil {
		t.Fatal(err)
	}
	refused := []string{"a-bomb.png", "b-bomb.jpg", "c-big.jpg", "d-fifo.png", "e-link.png"}
	// A character device (/dev/zero's numbers), where the test may make one.
	if syscall.Mknod(filepath.Join(dir, "f-dev.png"), syscall.S_IFCHR|0o644, 1<<8|5) == nil {
		refused = append(refused, "f-dev.png")
	}
	writeFrame(t, filepath.Join(dir, "z-good.png"), "OK1")

	var logs lockedbuf.Buffer
	src, err := scanner.Open("dir:"+dir+"?poll=10ms&leave=1", scanner.Env{Log: logTo(&logs), MaxFrame: image.Pt(1024, 768)})
	if err != nil {
		t.Fatal(err)
	}
	got := runUntil(t, src, 1)
	if strings.Join(got, " ") != "OK1" {
		t.Fatalf("scans %q, want only OK1", got)
	}
	for _, name := range refused {
		if _, err := os.Lstat(filepath.Join(dir, ".refused", name)); err != nil {
			t.Errorf("%s not moved aside: %v", name, err)
		}
		if n := strings.Count(logs.String(), "file="+name); n != 1 {
			t.Errorf("%s logged %d times, want once", name, n)
		}
	}
	// Nothing left to refuse or read again: a second source sees only
	// what is written next.
	var logs2 lockedbuf.Buffer
	writeFrame(t, filepath.Join(dir, "z-next.png"), "OK2")
	src2, _ := scanner.Open("dir:"+dir+"?poll=10ms&leave=1", scanner.Env{Log: logTo(&logs2), MaxFrame: image.Pt(1024, 768)})
	if got := runUntil(t, src2, 2); strings.Join(got, " ") != "OK1 OK2" {
		t.Fatalf("second source: scans %q", got)
	}
	if strings.Contains(logs2.String(), "refused") {
		t.Errorf("second source refused again:\n%s", logs2.String())
	}
}

// A refused file that cannot be moved aside (DIR/.refused is a file, not a
// directory) is remembered: logged once, never read again while the
// source keeps polling.
func TestDirRefusedFileRemembered(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ".refused"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "a-bomb.png"), bombPNG(t, 30000, 30000), 0o644)
	writeFrame(t, filepath.Join(dir, "b.png"), "R1")
	var logs lockedbuf.Buffer
	src, _ := scanner.Open("dir:"+dir+"?poll=10ms&leave=1", scanner.Env{Log: logTo(&logs)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := make(chan scanner.Scan)
	go src.Run(ctx, out)
	if s := <-out; string(s.Data) != "R1" {
		t.Fatalf("scan %q", s.Data)
	}
	time.Sleep(200 * time.Millisecond) // twenty polls
	writeFrame(t, filepath.Join(dir, "c.png"), "R2")
	if s := <-out; string(s.Data) != "R2" {
		t.Fatalf("scan %q", s.Data)
	}
	if n := strings.Count(logs.String(), "file=a-bomb.png"); n != 1 {
		t.Errorf("the bomb logged %d times, want once:\n%s", n, logs.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "a-bomb.png")); err != nil {
		t.Errorf("the bomb: %v", err)
	}
}

// TestMJPEGRefusesLargeFrames: a stream part claiming 30000x30000 and a
// real frame over the cap are passed over; the stream goes on.
func TestMJPEGRefusesLargeFrames(t *testing.T) {
	var good bytes.Buffer
	jpeg.Encode(&good, frame(t, "M1"), nil)
	srv := serveMJPEG(t, "", bombJPEG(t, 30000, 30000), bigFrame(t, "BIG", 1200, 1000), bombPNG(t, 30000, 30000), good.Bytes())
	defer srv.Close()
	var logs lockedbuf.Buffer
	src, err := scanner.Open("mjpeg:"+srv.URL, scanner.Env{Log: logTo(&logs), MaxFrame: image.Pt(1024, 768)})
	if err != nil {
		t.Fatal(err)
	}
	if got := runUntil(t, src, 1); strings.Join(got, " ") != "M1" {
		t.Fatalf("scans %q, want M1", got)
	}
	// Three frames passed over, logged once: a hostile stream cannot fill the disk with logs.
	if n := strings.Count(logs.String(), "frame skipped"); n != 1 || !strings.Contains(logs.String(), "larger than max_frame") {
		t.Errorf("%d skips logged, want one naming max_frame:\n%s", n, logs.String())
	}
}
