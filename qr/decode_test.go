package qr

import (
	"image"
	"testing"
)

const ticket = "G1:V50100XF9BFAM-PA57YEHEW00UC9:NLKO5MH100000000000000850AWHQFFKDRCK9LGI8IRYKA8KLB T5OP1HPAZ08I7CDG5RJ*HIUACHMUS3VWJ5J6U7VF OK$$5J9PF452XUI170ADSYOW/U10"

// gray renders ticket on a w x h gray frame with ink and paper levels.
func gray(t testing.TB, w, h, size int, ink, paper byte) *image.Gray {
	t.Helper()
	code, err := Image(ticket, size)
	if err != nil {
		t.Fatal(err)
	}
	g := image.NewGray(image.Rect(0, 0, w, h))
	for i := range g.Pix {
		g.Pix[i] = paper
	}
	b := code.Bounds()
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			if l, _, _, _ := code.At(b.Min.X+x, b.Min.Y+y).RGBA(); l < 0x8000 {
				g.Pix[(y+10)*w+x+10] = ink
			}
		}
	}
	return g
}

func TestReader(t *testing.T) {
	for _, tc := range []struct {
		name       string
		img        image.Image
		want       string
		singlePass bool
	}{
		{"clean", gray(t, 420, 420, 400, 0, 255), ticket, true},
		{"low contrast", gray(t, 420, 420, 400, 120, 150), ticket, false},
		{"sub-image", gray(t, 500, 500, 400, 0, 255).SubImage(image.Rect(5, 5, 480, 480)), ticket, true},
		{"blank", image.NewGray(image.Rect(0, 0, 320, 240)), "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := NewReader(nil).Decode(tc.img)
			if got != tc.want || (err != nil) != (tc.want == "") {
				t.Errorf("Decode = %q, %v; want %q", got, err, tc.want)
			}
			if !tc.singlePass {
				return
			}
			got, _ = NewReader(&ReaderOptions{SinglePass: true}).Decode(tc.img)
			if got != tc.want {
				t.Errorf("single pass: %q", got)
			}
		})
	}
	// The low-contrast frame needs the stretch pass: one pass fails it.
	if _, err := NewReader(&ReaderOptions{SinglePass: true}).Decode(gray(t, 420, 420, 400, 120, 150)); err == nil {
		t.Error("single pass read the low-contrast code; the test no longer exercises the stretch pass")
	}
}

// FuzzDecodeLuma: any luma plane decodes or fails, never panics.
func FuzzDecodeLuma(f *testing.F) {
	f.Add([]byte{0, 255, 0, 255}, uint8(2))
	f.Fuzz(func(t *testing.T, lum []byte, w uint8) {
		if w == 0 || len(lum) < int(w) {
			return
		}
		NewReader(nil).DecodeLuma(lum, int(w), len(lum)/int(w))
	})
}
