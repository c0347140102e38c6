package qr

import (
	"errors"
	"image"
	"image/draw"
	"math"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

// ErrNotFound is returned when a frame holds no readable QR code.
var ErrNotFound = errors.New("no QR code found")

// Luminance returns img's luma, one byte a pixel, row after row. The Y
// plane of a camera's YCbCr (JPEG, YUYV) frame and a Gray image are used
// as they are: this is the camera's fast path, as converting a 1280x720
// frame pixel by pixel through image.Image's At costs more than decoding.
func Luminance(img image.Image) (lum []byte, w, h int) {
	b := img.Bounds()
	w, h = b.Dx(), b.Dy()
	switch m := img.(type) {
	case *image.Gray:
		if m.Stride == w {
			return m.Pix[m.PixOffset(b.Min.X, b.Min.Y):][:w*h], w, h
		}
		lum = make([]byte, w*h)
		for y := 0; y < h; y++ {
			copy(lum[y*w:], m.Pix[m.PixOffset(b.Min.X, b.Min.Y+y):][:w])
		}
		return lum, w, h
	case *image.YCbCr:
		lum = make([]byte, w*h)
		for y := 0; y < h; y++ {
			off := m.YOffset(b.Min.X, b.Min.Y+y)
			copy(lum[y*w:], m.Y[off:off+w])
		}
		return lum, w, h
	case *image.RGBA, *image.NRGBA:
		var pix []byte
		var stride int
		if r, ok := m.(*image.RGBA); ok {
			pix, stride = r.Pix[r.PixOffset(b.Min.X, b.Min.Y):], r.Stride
		} else {
			n := m.(*image.NRGBA)
			pix, stride = n.Pix[n.PixOffset(b.Min.X, b.Min.Y):], n.Stride
		}
		lum = make([]byte, w*h)
		for y := 0; y < h; y++ {
			row := pix[y*stride:]
			for x := 0; x < w; x++ {
				p := row[4*x:]
				// BT.601 luma in integers; alpha is ignored (camera frames are opaque).
				lum[y*w+x] = byte((299*uint32(p[0]) + 587*uint32(p[1]) + 114*uint32(p[2])) / 1000)
			}
		}
		return lum, w, h
	}
	g := image.NewGray(image.Rect(0, 0, w, h))
	draw.Draw(g, g.Bounds(), img, b.Min, draw.Src)
	return g.Pix, w, h
}

// ReaderOptions tune a Reader. The zero value tries every pass.
type ReaderOptions struct {
	// SinglePass decodes once (hybrid binarizer, TRY_HARDER) with no
	// retries: cheaper on frames with no code, worse on hard ones.
	SinglePass bool
}

// Reader decodes ticket QR codes from photos and camera frames. It tries
// cheap passes first and harder ones only when they fail: a second
// binarizer, a contrast stretch (low contrast, glare), half size (blur,
// noise, large modules), double size (small modules) and a shear either
// way (a code seen at a slant). A Reader is not
// safe for concurrent use.
type Reader struct {
	opts  ReaderOptions
	qr    *qrcode.QRCodeReader
	hints map[gozxing.DecodeHintType]any
}

// NewReader returns a Reader; nil options mean the defaults.
func NewReader(o *ReaderOptions) *Reader {
	r := &Reader{qr: qrcode.NewQRCodeReader().(*qrcode.QRCodeReader),
		hints: map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_TRY_HARDER: true}}
	if o != nil {
		r.opts = *o
	}
	return r
}

// Decode returns the text of the QR code in img.
func (r *Reader) Decode(img image.Image) (string, error) {
	lum, w, h := Luminance(img)
	return r.DecodeLuma(lum, w, h)
}

// DecodeLuma decodes from a luma plane of w*h bytes.
func (r *Reader) DecodeLuma(lum []byte, w, h int) (string, error) {
	if w <= 0 || h <= 0 || len(lum) < w*h {
		return "", ErrNotFound
	}
	if s, ok := r.try(lum, w, h, true); ok || r.opts.SinglePass {
		return s, errIf(!ok)
	}
	if s, ok := r.try(lum, w, h, false); ok {
		return s, nil
	}
	if st := stretch(lum[:w*h]); st != nil {
		if s, ok := r.try(st, w, h, true); ok {
			return s, nil
		}
	}
	// Where is anything to read? A frame with no texture (an empty
	// gate lane) stops here, which keeps the camera's common case cheap.
	x0, y0, x1, y1, ok := busy(lum, w, h)
	if !ok {
		return "", ErrNotFound
	}
	if w >= 200 && h >= 200 {
		// Half size averages noise and blur away; the global binarizer then
		// copes best with noise, the hybrid one with uneven light.
		hl, hw, hh := half(lum, w, h)
		if s, ok := r.try(hl, hw, hh, true); ok {
			return s, nil
		}
		if s, ok := r.try(hl, hw, hh, false); ok {
			return s, nil
		}
	}
	// Double size for small modules, over the busy region only so a
	// 1280x720 frame does not become 2560x1440.
	cw, ch := x1-x0, y1-y0
	if cw*ch <= 800*600 {
		crop := make([]byte, cw*ch)
		for y := 0; y < ch; y++ {
			copy(crop[y*cw:], lum[(y0+y)*w+x0:][:cw])
		}
		dl, dw, dh := double(crop, cw, ch)
		if s, ok := r.try(dl, dw, dh, true); ok {
			return s, nil
		}
		// A code seen at a slant (a phone tilted toward the camera) is
		// sheared; the finder-pattern scan fails past about 0.2. Shear the
		// region back both ways.
		for _, k := range []float64{0.3, -0.3} {
			sl, sw := shear(crop, cw, ch, k)
			if s, ok := r.try(sl, sw, ch, true); ok {
				return s, nil
			}
		}
	}
	return "", ErrNotFound
}

func errIf(b bool) error {
	if b {
		return ErrNotFound
	}
	return nil
}

func (r *Reader) try(lum []byte, w, h int, hybrid bool) (text string, ok bool) {
	// A frame is outside input: should the decoder trip over one, that
	// frame is unreadable, and the daemon goes on.
	defer func() {
		if recover() != nil {
			text, ok = "", false
		}
	}()
	src, err := gozxing.NewPlanarYUVLuminanceSource(lum, w, h, 0, 0, w, h, false)
	if err != nil {
		return "", false
	}
	var bin gozxing.Binarizer
	if hybrid {
		bin = gozxing.NewHybridBinarizer(src)
	} else {
		bin = gozxing.NewGlobalHistgramBinarizer(src)
	}
	bmp, err := gozxing.NewBinaryBitmap(bin)
	if err != nil {
		return "", false
	}
	res, err := r.qr.Decode(bmp, r.hints)
	if err != nil {
		return "", false
	}
	return res.GetText(), true
}

// stretch maps the 1st..99th percentile of lum onto 0..255, or returns
// nil when the image already spans most of the range.
func stretch(lum []byte) []byte {
	var hist [256]int
	for _, v := range lum {
		hist[v]++
	}
	lo, hi := percentile(&hist, len(lum)/100), percentile(&hist, len(lum)-len(lum)/100)
	if hi-lo > 160 || hi <= lo {
		return nil
	}
	var lut [256]byte
	for i := range lut {
		v := (i - lo) * 255 / (hi - lo)
		lut[i] = byte(max(0, min(255, v)))
	}
	out := make([]byte, len(lum))
	for i, v := range lum {
		out[i] = lut[v]
	}
	return out
}

func percentile(hist *[256]int, n int) int {
	sum := 0
	for i, c := range hist {
		sum += c
		if sum > n {
			return i
		}
	}
	return 255
}

// busy returns the bounding box, with a margin, of the 16x16 tiles whose
// luma spans more than a code's weakest contrast; ok is false when no tile
// does.
func busy(lum []byte, w, h int) (x0, y0, x1, y1 int, ok bool) {
	const tile, minRange, margin = 16, 24, 32
	x0, y0 = w, h
	for ty := 0; ty+tile <= h; ty += tile {
		for tx := 0; tx+tile <= w; tx += tile {
			lo, hi := byte(255), byte(0)
			for y := ty; y < ty+tile; y += 2 {
				row := lum[y*w+tx : y*w+tx+tile]
				for _, v := range row {
					lo, hi = min(lo, v), max(hi, v)
				}
			}
			if int(hi)-int(lo) > minRange {
				x0, y0 = min(x0, tx), min(y0, ty)
				x1, y1 = max(x1, tx+tile), max(y1, ty+tile)
				ok = true
			}
		}
	}
	if !ok {
		return 0, 0, 0, 0, false
	}
	return max(0, x0-margin), max(0, y0-margin), min(w, x1+margin), min(h, y1+margin), true
}

// shear maps row y of lum to start k*(y-h/2) pixels further right,
// widening the image so nothing is cut; the new area takes the mean luma.
func shear(lum []byte, w, h int, k float64) ([]byte, int) {
	pad := int(math.Abs(k)*float64(h)/2) + 1
	sw := w + 2*pad
	var sum int
	for _, v := range lum[:w*h] {
		sum += int(v)
	}
	fill := byte(sum / (w * h))
	out := make([]byte, sw*h)
	for y := 0; y < h; y++ {
		shift := pad + int(math.Round(k*(float64(y)-float64(h)/2)))
		row := out[y*sw : (y+1)*sw]
		for i := range row {
			row[i] = fill
		}
		copy(row[shift:], lum[y*w:(y+1)*w])
	}
	return out, sw
}

// half averages 2x2 blocks.
func half(lum []byte, w, h int) ([]byte, int, int) {
	hw, hh := w/2, h/2
	out := make([]byte, hw*hh)
	for y := 0; y < hh; y++ {
		r0, r1 := lum[2*y*w:], lum[(2*y+1)*w:]
		for x := 0; x < hw; x++ {
			out[y*hw+x] = byte((int(r0[2*x]) + int(r0[2*x+1]) + int(r1[2*x]) + int(r1[2*x+1]) + 2) / 4)
		}
	}
	return out, hw, hh
}

// double scales up 2x with bilinear interpolation, so small modules span
// enough pixels for the finder-pattern scan.
func double(lum []byte, w, h int) ([]byte, int, int) {
	dw, dh := 2*w, 2*h
	out := make([]byte, dw*dh)
	for y := 0; y < dh; y++ {
		sy := y / 2
		sy1 := min(sy+1, h-1)
		fy := y & 1
		for x := 0; x < dw; x++ {
			sx := x / 2
			sx1 := min(sx+1, w-1)
			fx := x & 1
			a, b := int(lum[sy*w+sx]), int(lum[sy*w+sx1])
			c, d := int(lum[sy1*w+sx]), int(lum[sy1*w+sx1])
			top := a*(2-fx) + b*fx
			bot := c*(2-fx) + d*fx
			out[y*dw+x] = byte((top*(2-fy) + bot*fy + 2) / 4)
		}
	}
	return out, dw, dh
}
