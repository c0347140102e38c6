package cache

import (
	"crypto/ed25519"
	"path/filepath"
	"testing"
	"time"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// baselineOp returns the floor the scan path is measured against: one
// Ed25519 verification of a credential plus one bbolt read, nothing else.
func baselineOp(b *testing.B, w *world) func() {
	tok, _ := verify.Parse([]byte(w.codes[0]))
	raw := tok.Credential.Raw()
	msg := append([]byte("GATED-CRED-v1\x00"), raw[:len(raw)-64]...)
	sig, pub := raw[len(raw)-64:], w.issuer.Public().(ed25519.PublicKey)
	id := tok.Credential.Ticket
	db, err := bolt.Open(filepath.Join(b.TempDir(), "b.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	db.Update(func(tx *bolt.Tx) error {
		bk, _ := tx.CreateBucket([]byte("t"))
		return bk.Put(id[:], []byte("entry"))
	})
	return func() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify")
		}
		db.View(func(tx *bolt.Tx) error {
			if tx.Bucket([]byte("t")).Get(id[:]) == nil {
				b.Fatal("get")
			}
			return nil
		})
	}
}

// BenchmarkBaseline is the floor alone. BenchmarkScanCPU is compared with it.
func BenchmarkBaseline(b *testing.B) {
	op := baselineOp(b, newWorld(b, 1))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		op()
	}
}

// scanCPUOp returns one CPU-part scan of the i-th ticket: parse, verify,
// look up (whitelist, revocations, used, codes), decide, and write the
// journal, outbox and use records, in a transaction that is never
// committed. The commit is the I/O part, measured by the gate package's
// ScanDurable.
func scanCPUOp(b *testing.B, w *world) func(i int) {
	s := openStore(b, b.TempDir(), nil)
	if _, err := s.Provision(w.bundle(b, 1, "expo", w.root)); err != nil {
		b.Fatal(err)
	}
	v := w.verifier()
	codes := make([][]byte, len(w.codes))
	for i, c := range w.codes {
		codes[i] = []byte(c)
	}
	tx, err := s.db.Begin(true)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tx.Rollback() })
	return func(i int) {
		tok, err := verify.Parse(codes[i%len(codes)])
		if err != nil {
			b.Fatal(err)
		}
		sc := Scan{At: w.now, Gate: "g1", Scanner: "bench", Checked: v.Check(tok, w.now, nil)}
		if _, err := s.apply(tx, v, sc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScanCPU is the CPU part of the scan path (see scanCPUOp).
func BenchmarkScanCPU(b *testing.B) {
	op := scanCPUOp(b, newWorld(b, 4096))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		op(i)
	}
}

// BenchmarkScanCPURatio interleaves one baseline operation (Ed25519 verify
// plus one bbolt read) with one CPU-part scan, timing each, so load on a
// shared machine hits both alike; it reports their ratio.
func BenchmarkScanCPURatio(b *testing.B) {
	w := newWorld(b, 4096)
	scanOp, baseOp := scanCPUOp(b, w), baselineOp(b, w)
	var base, scan time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		baseOp()
		t1 := time.Now()
		scanOp(i)
		t2 := time.Now()
		base += t1.Sub(t0)
		scan += t2.Sub(t1)
	}
	b.ReportMetric(float64(scan)/float64(base), "scan/baseline")
	b.ReportMetric(float64(base.Nanoseconds())/float64(b.N), "baseline-ns")
	b.ReportMetric(float64(scan.Nanoseconds())/float64(b.N), "scan-ns")
}
