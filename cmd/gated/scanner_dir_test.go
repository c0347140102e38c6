package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDirScannerEndToEnd feeds gated the QR images `gatesync issue --png`
// wrote, as camera frames in a directory: issued tickets are admitted, a
// code held in view across frames counts once, a code shown again after
// it left the view is a second scan, and frames added later are read.
func TestDirScannerEndToEnd(t *testing.T) {
	tg := newTicketGate(t, 2, true)
	pngs, err := filepath.Glob(filepath.Join(tg.pngDir, "*.png"))
	if err != nil || len(pngs) != 2 {
		t.Fatalf("gatesync wrote %v (%v), want 2 PNGs", pngs, err)
	}
	ticketOf := func(p string) string { return strings.TrimSuffix(filepath.Base(p), ".png") }
	a, b := pngs[0], pngs[1]
	watch := t.TempDir()
	blank := filepath.Join(t.TempDir(), "blank.png")
	writeBlank(t, blank)
	n := 0
	frame := func(src string) {
		t.Helper()
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		// Written under a dot name and renamed, as a camera should drop frames.
		name := fmt.Sprintf("frame-%04d.png", n)
		n++
		tmp := filepath.Join(watch, "."+name)
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(watch, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{a, a, blank, a, b, b, blank, blank, blank, a} {
		frame(f)
	}
	d := startGated(t, tg, "dir:"+watch+"?poll=20ms")
	check := func(verdict, reason, png string) {
		t.Helper()
		m := d.expect(t, verdict, reason)
		if m["ticket"] != ticketOf(png) || m["scanner"] != "dir:"+watch {
			t.Errorf("decision %v, want ticket %s from dir:%s", m, ticketOf(png), watch)
		}
	}
	check("admit", "ok", a) // held across frames, with one frame missed: once
	check("admit", "ok", b)
	check("deny", "already_used", a) // shown again after leaving the view
	// A frame that appears while gated runs.
	for _, f := range []string{blank, blank, blank, b} {
		frame(f)
	}
	check("deny", "already_used", b)
	select {
	case m := <-d.decisions:
		t.Errorf("unexpected decision %v", m)
	default:
	}
}

func writeBlank(t *testing.T, path string) {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, 400, 400))
	for i := range img.Pix {
		img.Pix[i] = 240
	}
	img.Set(0, 0, color.Gray{Y: 0})
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
}
