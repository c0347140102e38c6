package scanner

import (
	"bytes"
	"errors"
	"image"
	"image/gif"
	"image/jpeg"
	"image/png"
	"testing"
)

// FuzzDecodeFrame: whatever bytes a camera, a stream or a file holds,
// decoding a frame never panics, never returns a frame over the cap, and
// a frame it returns is whole.
func FuzzDecodeFrame(f *testing.F) {
	img := image.NewGray(image.Rect(0, 0, 40, 30))
	for _, enc := range []func(*bytes.Buffer) error{
		func(b *bytes.Buffer) error { return png.Encode(b, img) },
		func(b *bytes.Buffer) error { return jpeg.Encode(b, img, nil) },
		func(b *bytes.Buffer) error { return gif.Encode(b, img, nil) },
	} {
		var b bytes.Buffer
		if err := enc(&b); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Add([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x75\x30\x00\x00\x75\x30\x08\x00\x00\x00\x00"))
	f.Add([]byte("not an image"))
	max := image.Pt(64, 64)
	f.Fuzz(func(t *testing.T, b []byte) {
		lum, w, h, err := decodeFrame(bytes.NewReader(b), max)
		if err != nil {
			if !errors.Is(err, errNoFrame) {
				t.Fatalf("error %v is not errNoFrame: the camera would be reopened", err)
			}
			return
		}
		if w > max.X || h > max.Y || w*h != len(lum) {
			t.Fatalf("%dx%d frame of %d bytes, cap %v", w, h, len(lum), max)
		}
	})
}
