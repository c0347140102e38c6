package cache_test

import (
	"fmt"
	"os"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/verify"
)

// A gate applies runs of the centre's uses log: a run past a gap is kept
// but leaves the cursor where it was, so the gate asks for what it missed.
func ExampleStore_ApplyUses() {
	dir, _ := os.MkdirTemp("", "gated-example")
	defer os.RemoveAll(dir)
	s, err := cache.Open(dir, nil)
	if err != nil {
		panic(err)
	}
	defer s.Close()
	// uses are the logged uses of tickets (one byte of their id each) at gate north-2.
	uses := func(tickets ...byte) ([]verify.TicketID, []verify.Use) {
		var ids []verify.TicketID
		var us []verify.Use
		for _, b := range tickets {
			ids = append(ids, verify.TicketID{b})
			us = append(us, verify.Use{Seq: uint64(b), At: time.Date(2026, 12, 1, 19, 0, 0, 0, time.UTC), Gate: "north-2"})
		}
		return ids, us
	}
	ids, us := uses(1)
	_, cur, _ := s.ApplyUses(1, 1, ids, us)
	fmt.Println("after 1-1:", cur)
	ids, us = uses(3)
	_, cur, _ = s.ApplyUses(3, 3, ids, us) // 2 went missing
	fmt.Println("after 3-3:", cur)
	ids, us = uses(2, 3)
	n, cur, _ := s.ApplyUses(2, 3, ids, us) // the catch-up page
	fmt.Println("after 2-3:", cur, "new:", n)
	// Output:
	// after 1-1: 1
	// after 3-3: 1
	// after 2-3: 3 new: 1
}
