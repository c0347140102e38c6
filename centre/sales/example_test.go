package sales_test

import (
	"fmt"
	"os"

	"github.com/gated-dev/gated/centre/sales"
)

// The configuration file gatesync serve --sales-config reads.
func ExampleParseFileConfig() {
	b, _ := os.ReadFile("testdata/sales.json")
	fc, err := sales.ParseFileConfig(b)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ev := range fc.Events {
		for _, tt := range ev.Types {
			for _, tr := range tt.Tiers {
				fmt.Printf("%s %s %s: %d at %d.%02d yuan\n", ev.ID, tt.ID, tr.ID, tr.Quota, tr.Price/100, tr.Price%100)
			}
		}
	}
	// Output:
	// gala-2027 floor early: 200 at 280.00 yuan
	// gala-2027 floor std: 800 at 380.00 yuan
}
