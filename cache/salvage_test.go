package cache

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzSalvage damages a real store file (a patch at an offset, and a cut)
// and salvages it: never a panic, whatever the bytes. Open must refuse it
// or open it, never panic either.
func FuzzSalvage(f *testing.F) {
	w := newWorld(f, 8)
	dir := f.TempDir()
	s := openStore(f, dir, &Options{Reserve: -1})
	if _, err := s.Provision(w.bundle(f, 1, "expo", w.root)); err != nil {
		f.Fatal(err)
	}
	v := w.verifier()
	for _, c := range w.codes {
		w.scan(f, s, v, c)
	}
	s.Close()
	pristine, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint32(0), []byte{}, uint32(len(pristine)))
	f.Add(uint32(2*4096), bytes.Repeat([]byte{0xff}, 4096), uint32(len(pristine)))
	f.Add(uint32(4096*3+20), []byte{9, 9, 9, 9}, uint32(len(pristine)))
	f.Add(uint32(0), []byte{}, uint32(8192))
	f.Fuzz(func(t *testing.T, off uint32, patch []byte, cut uint32) {
		b := bytes.Clone(pristine)
		if o := int(off) % len(b); len(patch) > 0 {
			copy(b[o:], patch)
		}
		b = b[:int(cut)%(len(b)+1)]
		d := t.TempDir()
		path := filepath.Join(d, FileName)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Salvage(path, io.Discard); err != nil && !strings.Contains(err.Error(), "salvage") {
			t.Fatalf("salvage error without context: %v", err)
		}
		if s, err := Open(d, &Options{MustExist: true, Reserve: -1}); err == nil {
			s.Journal(0, func(Entry) error { return nil })
			s.Stats()
			s.Close()
		}
	})
}
