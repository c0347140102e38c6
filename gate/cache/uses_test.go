package cache

import (
	"testing"
	"time"

	"github.com/gated-dev/gated/verify"
)

// TestApplyUses: the cursor moves only over a run that continues it; uses
// past a gap are stored all the same; the first use of a ticket stands;
// the cursor survives a reopen.
func TestApplyUses(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, &Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	tk := func(b byte) verify.TicketID { var id verify.TicketID; id[0] = b; return id }
	at := time.Date(2026, 12, 1, 18, 0, 0, 0, time.UTC)
	for _, st := range []struct {
		name     string
		from, to uint64
		ids      []byte
		gate     string
		newUses  int
		cursor   uint64
	}{
		{"1-2", 1, 2, []byte{1, 2}, "g2", 2, 2},
		{"4-5 past a gap", 4, 5, []byte{4, 5}, "g2", 2, 2},
		{"3-5 fills it", 3, 5, []byte{3, 4, 5}, "g3", 1, 5},
		{"replay", 1, 2, []byte{1, 2}, "g3", 0, 5},
		{"empty page at the head", 6, 5, nil, "", 0, 5},
		{"6-6", 6, 6, []byte{6}, "g2", 1, 6},
		{"7-7", 7, 7, []byte{7}, "g2", 1, 7},
		{"restart at 2 (an older log)", 0, 2, []byte{1, 2}, "g3", 0, 2},
		{"3-3 of the older log", 3, 3, []byte{8}, "g3", 1, 3},
	} {
		var ids []verify.TicketID
		var uses []verify.Use
		for i, b := range st.ids {
			ids = append(ids, tk(b))
			uses = append(uses, verify.Use{Seq: uint64(i + 1), At: at, Gate: st.gate})
		}
		n, cur, err := s.ApplyUses(st.from, st.to, ids, uses)
		if err != nil || n != st.newUses || cur != st.cursor {
			t.Errorf("%s: %d new, cursor %d, %v; want %d, %d", st.name, n, cur, err, st.newUses, st.cursor)
		}
	}
	if u, err := s.Used(tk(4)); err != nil || u == nil || u.Gate != "g2" {
		t.Errorf("ticket 4: %+v, %v; the first use (g2) stands", u, err)
	}
	s.Close()
	if s, err = Open(dir, &Options{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if cur, err := s.UsesCursor(); err != nil || cur != 3 {
		t.Errorf("after reopen: cursor %d, %v; want 3", cur, err)
	}
}
