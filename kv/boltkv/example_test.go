package boltkv_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/gated-dev/gated/kv"
	"github.com/gated-dev/gated/kv/boltkv"
)

// Orders kept under keys that begin with their event, written in one
// Update and listed by a prefix scan.
func Example() {
	dir, err := os.MkdirTemp("", "boltkv-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := boltkv.Open(filepath.Join(dir, "sales.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()

	err = db.Update(ctx, func(tx kv.Tx) error {
		for _, o := range []struct{ key, buyer string }{
			{"concert/0002", "bea"},
			{"opera/0001", "carl"},
			{"concert/0001", "ann"},
		} {
			if err := tx.Put("orders", []byte(o.key), []byte(o.buyer)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	err = db.View(ctx, func(tx kv.Tx) error {
		return kv.ScanPrefix(tx, "orders", []byte("concert/"), func(k, v []byte) error {
			fmt.Printf("%s %s\n", k, v)
			return nil
		})
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// concert/0001 ann
	// concert/0002 bea
}
