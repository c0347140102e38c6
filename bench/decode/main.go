// Command decode benchmarks QR decoding of ticket codes as a gate camera
// sees them. It generates a reproducible image set (real ticket payloads,
// rendered, then rotated, skewed, blurred, noised, low in contrast, under
// glare, with small modules, all on 1280x720 frames), decodes every image
// with gozxing (plain, as qr.Decode does, and through qr.Reader, gated's
// camera path) and with zbarimg, and prints the decode rate and time per
// image of each.
//
//	go run ./bench/decode [-n 25] [-seed 1] [-dir DIR] [-zbarimg zbarimg]
//
// zbarimg comes from Debian's zbar-tools. Its per-image time includes
// starting the process and reading the PNG; the batch column runs one
// zbarimg over every image of a set, which amortises the start.
package main

import (
	"bytes"
	"crypto/ed25519"
	"flag"
	"fmt"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/gated-dev/gated/qr"
	"github.com/gated-dev/gated/verify"
)

const frameW, frameH = 1280, 720

func main() {
	n := flag.Int("n", 25, "images per distortion")
	seed := flag.Uint64("seed", 1, "random seed; the same seed gives the same images")
	dir := flag.String("dir", "", "where to write the images (default: a temporary directory, removed after)")
	zbar := flag.String("zbarimg", "zbarimg", "zbarimg command")
	flag.Parse()
	if err := run(*n, *seed, *dir, *zbar); err != nil {
		fmt.Fprintln(os.Stderr, "decode:", err)
		os.Exit(1)
	}
}

// distortion is one kind of hard image.
type distortion struct {
	name string
	make func(r *rand.Rand, payload string) (*image.Gray, error)
}

var distortions = []distortion{
	{"clean", func(r *rand.Rand, p string) (*image.Gray, error) { return scene(r, p, sceneOpts{module: 6}) }},
	{"rotated", func(r *rand.Rand, p string) (*image.Gray, error) {
		return scene(r, p, sceneOpts{module: 5, angle: 10 + r.Float64()*70})
	}},
	{"skewed", func(r *rand.Rand, p string) (*image.Gray, error) {
		shear := 0.2 + r.Float64()*0.3
		if r.IntN(2) == 0 {
			shear = -shear
		}
		return scene(r, p, sceneOpts{module: 5, shear: shear, squash: 0.6 + r.Float64()*0.3, angle: r.Float64()*40 - 20})
	}},
	{"blurred", func(r *rand.Rand, p string) (*image.Gray, error) {
		return scene(r, p, sceneOpts{module: 5, blur: 1 + r.IntN(2)})
	}},
	{"noisy", func(r *rand.Rand, p string) (*image.Gray, error) {
		return scene(r, p, sceneOpts{module: 5, noise: 30 + r.Float64()*20})
	}},
	{"low-contrast", func(r *rand.Rand, p string) (*image.Gray, error) {
		lo := 100 + r.IntN(30)
		return scene(r, p, sceneOpts{module: 5, black: lo, white: lo + 28 + r.IntN(15)})
	}},
	{"glare", func(r *rand.Rand, p string) (*image.Gray, error) {
		return scene(r, p, sceneOpts{module: 5, glare: 140 + r.Float64()*80})
	}},
	{"small-modules", func(r *rand.Rand, p string) (*image.Gray, error) {
		return scene(r, p, sceneOpts{module: 1.6 + r.Float64()*0.6})
	}},
	{"mixed", func(r *rand.Rand, p string) (*image.Gray, error) {
		return scene(r, p, sceneOpts{module: 4, angle: r.Float64() * 40, blur: 1, noise: 8, glare: 50, black: 50, white: 200})
	}},
}

type sceneOpts struct {
	module        float64 // pixels per module
	angle         float64 // degrees
	shear, squash float64
	blur          int     // box-blur radius, applied three times
	noise         float64 // Gaussian sigma
	black, white  int     // ink and paper levels; 0 means 20 and 235
	glare         float64 // peak of a bright spot over the code
}

// scene renders payload as a QR code on a 1280x720 frame with opts.
func scene(r *rand.Rand, payload string, o sceneOpts) (*image.Gray, error) {
	ver, _, err := qr.Version(payload)
	if err != nil {
		return nil, err
	}
	modules := 17 + 4*ver + 8               // with the 4-module quiet zone each side
	code, err := qr.Image(payload, modules) // one pixel a module
	if err != nil {
		return nil, err
	}
	cb := code.Bounds()
	cw := cb.Dx()
	dark := make([]bool, cw*cb.Dy())
	for y := 0; y < cb.Dy(); y++ {
		for x := 0; x < cw; x++ {
			l, _, _, _ := code.At(cb.Min.X+x, cb.Min.Y+y).RGBA()
			dark[y*cw+x] = l < 0x8000
		}
	}
	cs := float64(cw) // code image side, modules*k pixels
	black, white := o.black, o.white
	if black == 0 && white == 0 {
		black, white = 20, 235
	}
	side := o.module * float64(modules) // code side in the frame
	scale := side / cs
	cx := frameW/2 + (r.Float64()-0.5)*200
	cy := frameH/2 + (r.Float64()-0.5)*100
	a := o.angle * math.Pi / 180
	// Forward map: code (u,v) centred -> frame: R * Shear * Squash * scale.
	// Inverse it per frame pixel.
	m := [4]float64{scale, 0, 0, scale}
	m = mul(m, [4]float64{1, o.shear, 0, 1})
	if o.squash > 0 {
		m = mul([4]float64{1, 0, 0, o.squash}, m)
	}
	m = mul([4]float64{math.Cos(a), -math.Sin(a), math.Sin(a), math.Cos(a)}, m)
	det := m[0]*m[3] - m[1]*m[2]
	inv := [4]float64{m[3] / det, -m[1] / det, -m[2] / det, m[0] / det}
	img := image.NewGray(image.Rect(0, 0, frameW, frameH))
	for y := 0; y < frameH; y++ {
		for x := 0; x < frameW; x++ {
			// A mild background gradient, like a real scene.
			bg := float64(white) - 25*float64(x)/frameW
			// 4x4 samples a pixel, each the module it falls in: sharp
			// module edges with area antialiasing, as a camera sees print.
			val, inside := 0.0, false
			for sy := 0; sy < 4; sy++ {
				for sx := 0; sx < 4; sx++ {
					dx := float64(x) + (float64(sx)+0.5)/4 - cx
					dy := float64(y) + (float64(sy)+0.5)/4 - cy
					u := inv[0]*dx + inv[1]*dy + cs/2
					v := inv[2]*dx + inv[3]*dy + cs/2
					c := bg
					if u >= 0 && v >= 0 && u < cs && v < cs {
						inside = true
						c = float64(white)
						if dark[int(v)*cw+int(u)] {
							c = float64(black)
						}
					}
					val += c / 16
				}
			}
			if !inside {
				val = bg
			}
			img.Pix[y*frameW+x] = clamp(val)
		}
	}
	for i := 0; i < 3 && o.blur > 0; i++ {
		boxBlur(img, o.blur)
	}
	if o.glare > 0 {
		gx, gy := cx+(r.Float64()-0.5)*side*0.5, cy+(r.Float64()-0.5)*side*0.5
		rad := side * (0.25 + r.Float64()*0.15)
		for y := 0; y < frameH; y++ {
			for x := 0; x < frameW; x++ {
				d2 := ((float64(x)-gx)*(float64(x)-gx) + (float64(y)-gy)*(float64(y)-gy)) / (rad * rad)
				i := y*frameW + x
				img.Pix[i] = clamp(float64(img.Pix[i]) + o.glare*math.Exp(-d2))
			}
		}
	}
	if o.noise > 0 {
		for i := range img.Pix {
			img.Pix[i] = clamp(float64(img.Pix[i]) + r.NormFloat64()*o.noise)
		}
	}
	return img, nil
}

func mul(a, b [4]float64) [4]float64 {
	return [4]float64{a[0]*b[0] + a[1]*b[2], a[0]*b[1] + a[1]*b[3], a[2]*b[0] + a[3]*b[2], a[2]*b[1] + a[3]*b[3]}
}

func clamp(v float64) uint8 { return uint8(math.Max(0, math.Min(255, math.Round(v)))) }

// boxBlur blurs img in place with a (2r+1)^2 box, rows then columns.
func boxBlur(img *image.Gray, r int) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	tmp := make([]uint8, len(img.Pix))
	pass := func(src, dst []uint8, n, m, step, stride int) {
		for j := 0; j < m; j++ {
			for i := 0; i < n; i++ {
				sum, cnt := 0, 0
				for k := max(0, i-r); k <= min(n-1, i+r); k++ {
					sum += int(src[j*stride+k*step])
					cnt++
				}
				dst[j*stride+i*step] = uint8(sum / cnt)
			}
		}
	}
	pass(img.Pix, tmp, w, h, 1, w)
	pass(tmp, img.Pix, h, w, w, 1)
}

// payloads makes n static ticket codes in the real format, signed with a
// key derived from seed, so runs are reproducible.
func payloads(n int, seed uint64, r *rand.Rand) ([]string, error) {
	var ks [32]byte
	for i := range ks {
		ks[i] = byte(r.IntN(256))
	}
	key := ed25519.NewKeyFromSeed(ks[:])
	out := make([]string, n)
	base := time.Date(2026, 12, 31, 18, 0, 0, 0, time.UTC)
	for i := range out {
		c := &verify.Credential{KeyID: 1, Event: verify.TagOf("bench"), Serial: 1,
			NotBefore: base, NotAfter: base.Add(6 * time.Hour), Zone: []string{"", "A", "VIP"}[i%3]}
		for j := range c.Ticket {
			c.Ticket[j] = byte(r.IntN(256))
		}
		raw, err := c.Sign(key)
		if err != nil {
			return nil, err
		}
		out[i] = verify.StaticCode(raw)
	}
	return out, nil
}

type tally struct {
	ok    int
	total time.Duration
}

func run(n int, seed uint64, dir, zbar string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "gated-decode-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	zbarPath, zerr := exec.LookPath(zbar)
	if zerr != nil {
		fmt.Fprintf(os.Stderr, "decode: %s not found (apt-get install zbar-tools); zbar columns are left out\n", zbar)
	}
	r := rand.New(rand.NewPCG(seed, 0x9a7ed))
	codes, err := payloads(n, seed, r)
	if err != nil {
		return err
	}
	plain := func(img image.Image) (string, error) { return qr.Decode(img) }
	reader := qr.NewReader(nil)
	single := qr.NewReader(&qr.ReaderOptions{SinglePass: true})
	decoders := []struct {
		name string
		f    func(image.Image) (string, error)
	}{
		{"gozxing plain (qr.Decode)", plain},
		{"gozxing 1 pass (fast path)", single.Decode},
		{"gozxing gated (qr.Reader)", reader.Decode},
	}
	fmt.Printf("decode benchmark: %d images per distortion, %dx%d frames, seed %d, %s\n\n", n, frameW, frameH, seed, dir)
	header := fmt.Sprintf("%-14s", "distortion")
	for _, d := range decoders {
		header += fmt.Sprintf(" | %-27s", d.name)
	}
	if zerr == nil {
		header += fmt.Sprintf(" | %-27s | %s", "zbarimg (per process)", "zbarimg batch ms/img")
	}
	fmt.Println(header)
	fmt.Println(strings.Repeat("-", len(header)))
	totals := make([]tally, len(decoders)+1)
	var zbarBatch time.Duration
	for _, dist := range distortions {
		var files []string
		row := make([]tally, len(decoders)+1)
		for i, payload := range codes {
			img, err := dist.make(r, payload)
			if err != nil {
				return err
			}
			file := filepath.Join(dir, fmt.Sprintf("%s-%03d.png", dist.name, i))
			if err := writePNG(file, img); err != nil {
				return err
			}
			files = append(files, file)
			for k, d := range decoders {
				start := time.Now()
				got, err := d.f(img)
				row[k].total += time.Since(start)
				if err == nil && got == payload {
					row[k].ok++
				}
			}
			if zerr == nil {
				start := time.Now()
				out, _ := exec.Command(zbarPath, "-q", "--raw", "-Sdisable", "-Sqrcode.enable", file).Output()
				row[len(decoders)].total += time.Since(start)
				if strings.TrimRight(string(out), "\n") == payload {
					row[len(decoders)].ok++
				}
			}
		}
		line := fmt.Sprintf("%-14s", dist.name)
		for k := range decoders {
			line += " | " + cell(row[k], n)
			totals[k].ok += row[k].ok
			totals[k].total += row[k].total
		}
		if zerr == nil {
			start := time.Now()
			exec.Command(zbarPath, append([]string{"-q", "--raw", "-Sdisable", "-Sqrcode.enable"}, files...)...).Run()
			batch := time.Since(start)
			zbarBatch += batch
			k := len(decoders)
			totals[k].ok += row[k].ok
			totals[k].total += row[k].total
			line += " | " + cell(row[k], n) + fmt.Sprintf(" | %.1f", ms(batch)/float64(n))
		}
		fmt.Println(line)
	}
	all := n * len(distortions)
	line := fmt.Sprintf("%-14s", "ALL")
	for k := range decoders {
		line += " | " + cell(totals[k], all)
	}
	if zerr == nil {
		line += " | " + cell(totals[len(decoders)], all) + fmt.Sprintf(" | %.1f", ms(zbarBatch)/float64(all))
	}
	fmt.Println(strings.Repeat("-", len(header)))
	fmt.Println(line)

	// A camera mostly sees frames with no code: time those too.
	blank, _ := scene(r, codes[0], sceneOpts{module: 5})
	for i := range blank.Pix {
		blank.Pix[i] = clamp(180 + r.NormFloat64()*10)
	}
	fmt.Printf("\ntime per 1280x720 frame without a code (the common case for a camera):\n")
	for _, d := range decoders {
		const reps = 5
		start := time.Now()
		for range reps {
			d.f(blank)
		}
		fmt.Printf("  %-27s %7.1f ms\n", d.name, ms(time.Since(start))/reps)
	}
	if zerr == nil {
		file := filepath.Join(dir, "blank.png")
		writePNG(file, blank)
		start := time.Now()
		exec.Command(zbarPath, "-q", "--raw", file).Run()
		fmt.Printf("  %-27s %7.1f ms (one process)\n", "zbarimg", ms(time.Since(start)))
	}
	return nil
}

func cell(t tally, n int) string {
	return fmt.Sprintf("%3d/%-3d %5.1f%% %7.1f ms", t.ok, n, 100*float64(t.ok)/float64(n), ms(t.total)/float64(n))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func writePNG(path string, img image.Image) error {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
