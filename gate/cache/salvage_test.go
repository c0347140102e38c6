package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
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
			s.Journal(0, func(Decision) error { return nil })
			s.Stats()
			s.Close()
		}
	})
}

// A store whose journal record 75 is destroyed in every page that held
// it: salvage copies out every other record exactly as stored, in order,
// names the missing ones, and invents nothing.
func TestSalvageDamagedJournalPage(t *testing.T) {
	w := newWorld(t, 150)
	dir := t.TempDir()
	s := openStore(t, dir, &Options{Reserve: -1})
	if _, err := s.Provision(w.bundle(t, 1, "expo", w.root)); err != nil {
		t.Fatal(err)
	}
	v := w.verifier()
	for _, c := range w.codes {
		w.scan(t, s, v, c)
	}
	want := map[uint64][]byte{}
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bJournal).ForEach(func(k, v []byte) error {
			want[binary.BigEndian.Uint64(k)] = bytes.Clone(v)
			return nil
		})
	})
	s.Close()
	path := filepath.Join(dir, FileName)
	b, _ := os.ReadFile(path)
	// Zero every leaf page (current or older copy) that holds record 75.
	zeroed := 0
	for p := 2; (p+1)*4096 <= len(b); p++ {
		pg := b[p*4096 : (p+1)*4096]
		if binary.LittleEndian.Uint16(pg[8:]) == leafFlag && bytes.Contains(pg, want[75][:40]) {
			clear(pg)
			zeroed++
		}
	}
	if zeroed == 0 {
		t.Fatal("no page holds journal record 75")
	}
	os.WriteFile(path, b, 0o600)
	var out bytes.Buffer
	rep, err := Salvage(path, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pages zeroed; salvage: %d of %d journal records, missing %v, %d from older pages",
		zeroed, rep.Journal, len(want), rep.Missing, rep.FromPages)
	got := map[uint64]bool{}
	prev := uint64(0)
	dec := json.NewDecoder(&out)
	for {
		var l SalvageLine
		if err := dec.Decode(&l); err != nil {
			break
		}
		if l.Kind != "journal" {
			continue
		}
		if l.Seq <= prev {
			t.Fatalf("journal out of order: %d after %d", l.Seq, prev)
		}
		prev = l.Seq
		if !bytes.Equal(l.Record, want[l.Seq]) {
			t.Fatalf("journal record %d salvaged as %s, stored %s", l.Seq, l.Record, want[l.Seq])
		}
		got[l.Seq] = true
	}
	if got[75] {
		t.Fatal("record 75 was salvaged although every page holding it was destroyed")
	}
	var missing []string
	for seq := uint64(1); seq <= uint64(len(want)); seq++ {
		if !got[seq] {
			missing = append(missing, fmt.Sprint(seq))
		}
	}
	named := map[string]bool{}
	for _, r := range rep.Missing {
		a, z, _ := strings.Cut(r, "-")
		if z == "" {
			z = a
		}
		var lo, hi uint64
		fmt.Sscan(a, &lo)
		fmt.Sscan(z, &hi)
		for seq := lo; seq <= hi; seq++ {
			named[fmt.Sprint(seq)] = true
		}
	}
	for _, m := range missing {
		if !named[m] {
			t.Errorf("record %s is neither salvaged nor named missing", m)
		}
	}
	if len(named) != len(missing) {
		t.Errorf("named missing %v, actually missing %v", rep.Missing, missing)
	}
}
