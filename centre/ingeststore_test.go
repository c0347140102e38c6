package centre_test

import (
	"path/filepath"
	"testing"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/ingesttest"
)

func TestBoltIngestConformance(t *testing.T) {
	ingesttest.Run(t, func(t *testing.T, n int) []centre.IngestStore {
		s, err := centre.OpenBoltIngest(filepath.Join(t.TempDir(), "ingest.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		hs := make([]centre.IngestStore, n)
		for i := range hs {
			hs[i] = s
		}
		return hs
	})
}
