package ticketpage

import (
	"fmt"
	"image"
	"image/color"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gated-dev/gated/centre/ticketpage/headless"
	"github.com/gated-dev/gated/qr"
	"github.com/makiuchi-d/gozxing/qrcode/encoder"
)

const base45Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

// assetServer serves the embedded assets and a blank page that loads qr.js.
func assetServer(t testing.TB) *httptest.Server {
	sub, _ := fs.Sub(assets, "assets")
	mux := http.NewServeMux()
	mux.Handle("/t-assets/", http.StripPrefix("/t-assets/", http.FileServerFS(sub)))
	mux.HandleFunc("/blank", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<!doctype html><body><canvas id=c></canvas><script src="/t-assets/qr.js"></script>`)
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

type jsSymbol struct {
	Version int      `json:"version"`
	Mode    string   `json:"mode"`
	Mask    int      `json:"mask"`
	Rows    []string `json:"rows"`
}

func jsEncode(t *testing.T, b *headless.Browser, text string, mask int) jsSymbol {
	t.Helper()
	opts := "{}"
	if mask >= 0 {
		opts = fmt.Sprintf("{mask: %d}", mask)
	}
	var s jsSymbol
	expr := fmt.Sprintf(`(() => { const s = GatedQR.encode(%q, %s);
		return {version: s.version, mode: s.mode, mask: s.mask, rows: s.modules.map(r => r.map(d => d ? "1" : "0").join(""))}; })()`, text, opts)
	if err := b.Eval(expr, &s); err != nil {
		t.Fatalf("encode %q: %v", text, err)
	}
	return s
}

// render draws rows at 4 px a module with the quiet zone.
func render(rows []string) image.Image {
	const scale, quiet = 4, 4
	n := len(rows)
	img := image.NewGray(image.Rect(0, 0, (n+2*quiet)*scale, (n+2*quiet)*scale))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	for y, row := range rows {
		for x, c := range row {
			if c == '1' {
				for dy := range scale {
					for dx := range scale {
						img.SetGray((x+quiet)*scale+dx, (y+quiet)*scale+dy, color.Gray{})
					}
				}
			}
		}
	}
	return img
}

// TestQREncoderMatchesGozxing checks the page's JavaScript encoder against
// gozxing: with gozxing's mask the symbols are identical module for
// module, and with its own mask choice gozxing reads it back.
func TestQREncoderMatchesGozxing(t *testing.T) {
	srv := assetServer(t)
	b := headless.Start(t, nil)
	b.Navigate(srv.URL + "/blank")
	rnd := rand.New(rand.NewPCG(1, 2))
	var texts []string
	for _, n := range []int{1, 2, 7, 20, 30, 47, 48, 77, 100, 127, 152, 176, 188, 211, 250, 302, 326, 362, 400} {
		var sb strings.Builder
		for range n {
			sb.WriteByte(base45Alphabet[rnd.IntN(45)])
		}
		texts = append(texts, sb.String())
	}
	texts = append(texts, "G1:HELLO", "hello, gate", strings.Repeat("byte mode text ", 10), "https://example.org/t/abc?k=XYZ")
	versions := map[int]bool{}
	for _, text := range texts {
		ref, err := encoder.Encoder_encodeWithoutHint(text, qr.Level)
		if err != nil {
			t.Fatal(err)
		}
		wantAlnum := !strings.ContainsFunc(text, func(r rune) bool { return !strings.ContainsRune(base45Alphabet, r) })
		got := jsEncode(t, b, text, ref.GetMaskPattern())
		if got.Version != ref.GetVersion().GetVersionNumber() {
			t.Fatalf("%d chars: version %d, gozxing %d", len(text), got.Version, ref.GetVersion().GetVersionNumber())
		}
		if (got.Mode == "alphanumeric") != wantAlnum {
			t.Fatalf("%d chars %q...: mode %s", len(text), text[:min(10, len(text))], got.Mode)
		}
		m := ref.GetMatrix()
		for y, row := range got.Rows {
			for x, c := range row {
				if (m.Get(x, y) == 1) != (c == '1') {
					t.Fatalf("%d chars, version %d, mask %d: module (%d,%d) differs from gozxing's", len(text), got.Version, got.Mask, x, y)
				}
			}
		}
		auto := jsEncode(t, b, text, -1)
		dec, derr := qr.Decode(render(auto.Rows))
		if derr != nil || dec != text {
			t.Fatalf("%d chars, version %d, own mask %d: gozxing read %q, %v", len(text), auto.Version, auto.Mask, dec, derr)
		}
		versions[got.Version] = true
	}
	for v := 1; v <= 11; v++ {
		if !versions[v] {
			t.Errorf("no test text encodes at version %d", v)
		}
	}
}
