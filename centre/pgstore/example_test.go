package pgstore_test

import (
	"context"
	"log"
	"os"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/pgstore"
)

// A centre whose books of entries are in PostgreSQL, as gatesync serve
// --store postgres://... sets it up.
func Example() {
	c, err := centre.Open("/var/lib/gatesync", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	s, err := pgstore.Open(context.Background(), os.Getenv("GATESYNC_STORE"), pgstore.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	c.SetIngestStore(s)
	// Ingest, Entries, Conflicts and Gates now use PostgreSQL; the primary
	// shares its re-entry tickets with the other instances.
	if _, err := c.ShareReentry(); err != nil {
		log.Fatal(err)
	}
}
