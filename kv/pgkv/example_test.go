package pgkv_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"

	"github.com/gated-dev/gated/kv"
	"github.com/gated-dev/gated/kv/pgkv"
)

// Selling one unit of a stock kept in PostgreSQL. Buyers of the same item
// queue on its row, whichever instance serves them; the function may run
// again, so it sets what it reports afresh each time. (No output: it
// needs a server, named here by GATESYNC_KV_URL.)
func Example() {
	ctx := context.Background()
	db, err := pgkv.Open(ctx, os.Getenv("GATESYNC_KV_URL"), pgkv.Options{Table: "shop_kv"})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	errSoldOut := errors.New("sold out")
	var unit int
	err = db.Update(ctx, func(tx kv.Tx) error {
		unit = 0
		v, err := tx.Get("stock", []byte("concert"))
		if err != nil {
			return err
		}
		n, _ := strconv.Atoi(string(v))
		if n <= 0 {
			return errSoldOut
		}
		if err := tx.Put("stock", []byte("concert"), []byte(strconv.Itoa(n-1))); err != nil {
			return err
		}
		unit = n
		return tx.Put("sales", fmt.Appendf(nil, "concert/%06d", n), []byte("ann"))
	})
	switch {
	case errors.Is(err, errSoldOut):
		fmt.Println("sold out")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Println("sold unit", unit)
	}

	err = db.View(ctx, func(tx kv.Tx) error {
		return kv.ScanPrefix(tx, "sales", []byte("concert/"), func(k, v []byte) error {
			fmt.Printf("%s %s\n", k, v)
			return nil
		})
	})
	if err != nil {
		log.Fatal(err)
	}
}
