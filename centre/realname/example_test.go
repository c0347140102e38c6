package realname_test

import (
	"bytes"
	"fmt"

	"github.com/gated-dev/gated/centre/realname"
)

func Example() {
	// Two different 32-byte server secrets, from the sales configuration.
	v, _ := realname.NewVault(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32))
	h, err := realname.Normalise(realname.Holder{Name: " 张小三 ", ID: "11010519491231002x"})
	if err != nil {
		fmt.Println(err)
		return
	}
	sealed, _ := v.Seal(h, []byte("ticket:42")) // stored
	index := v.IDHash(h.ID)                     // stored: one id, one ticket per show
	back, _ := v.Open(sealed, []byte("ticket:42"))
	fmt.Println(len(index), back.Mask().Name, back.Mask().ID)
	// Output: 32 张*三 ****002X
}
