package cache

import (
	"crypto/ed25519"
	"path/filepath"
	"testing"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkBaseline is the floor: one Ed25519 verification plus one bbolt
// read. BenchmarkScanCPU is compared against it.
func BenchmarkBaseline(b *testing.B) {
	w := newWorld(b, 1)
	tok, _ := verify.Parse([]byte(w.codes[0]))
	raw := tok.Credential.Raw()
	msg := append([]byte("GATED-CRED-v1\x00"), raw[:len(raw)-64]...)
	sig := raw[len(raw)-64:]
	pub := w.issuer.Public().(ed25519.PublicKey)
	db, err := bolt.Open(filepath.Join(b.TempDir(), "b.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.Update(func(tx *bolt.Tx) error {
		bk, _ := tx.CreateBucket([]byte("t"))
		return bk.Put(tok.Credential.Ticket[:], []byte("entry"))
	})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify")
		}
		db.View(func(tx *bolt.Tx) error {
			if tx.Bucket([]byte("t")).Get(tok.Credential.Ticket[:]) == nil {
				b.Fatal("get")
			}
			return nil
		})
	}
}

// BenchmarkScanCPU is the CPU part of the scan path: parse, verify, look
// up (whitelist, revocations, used, codes), decide, and write the journal,
// outbox and use records, in a transaction that is never committed. The
// commit is the I/O part, measured by the gate package's ScanDurable.
func BenchmarkScanCPU(b *testing.B) {
	w := newWorld(b, 4096)
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
	defer tx.Rollback()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tok, err := verify.Parse(codes[i%len(codes)])
		if err != nil {
			b.Fatal(err)
		}
		sc := Scan{At: w.now, Gate: "g1", Scanner: "bench", Token: tok, Pre: v.Check(tok, w.now, nil)}
		if _, err := s.apply(tx, v, sc); err != nil {
			b.Fatal(err)
		}
	}
}
