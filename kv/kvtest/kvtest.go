// Package kvtest is the conformance suite of kv.DB implementations: what
// the sales books rely on, checked the same way on every backend.
//
// An implementation's test calls Run with a function that opens a new,
// empty store:
//
//	func TestConformance(t *testing.T) {
//		kvtest.Run(t, func(t *testing.T) kv.DB {
//			db, err := mykv.Open(...)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { db.Close() })
//			return db
//		})
//	}
//
// Functions given to Update and Batch may run more than once (see package
// kv), so every test function here sets what it captures afresh on each
// run.
package kvtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/gated-dev/gated/kv"
)

// Run runs the suite, each part as a subtest. open returns a new, empty
// store and arranges for it to be closed when the test ends (t.Cleanup);
// it is called once a subtest, twice for Copy.
func Run(t *testing.T, open func(t *testing.T) kv.DB) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, open func(t *testing.T) kv.DB)
	}{
		{"GetMissing", testGetMissing},
		{"RoundTrip", testRoundTrip},
		{"EmptyValue", testEmptyValue},
		{"Buckets", testBuckets},
		{"ScanOrder", testScanOrder},
		{"ScanBounds", testScanBounds},
		{"ScanStop", testScanStop},
		{"ScanLarge", testScanLarge},
		{"PrefixEnd", testPrefixEnd},
		{"ScanPrefix", testScanPrefix},
		{"Rollback", testRollback},
		{"ReadOnly", testReadOnly},
		{"ReadYourWrites", testReadYourWrites},
		{"ConsistentView", testConsistentView},
		{"ConcurrentIncrement", testConcurrentIncrement},
		{"CreateRace", testCreateRace},
		{"Oversell", testOversell},
		{"Copy", testCopy},
		{"Cancelled", testCancelled},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// pair is a key and its value as a scan saw them.
type pair struct{ k, v string }

func (p pair) String() string { return fmt.Sprintf("%q=%q", p.k, p.v) }

// scan collects a scan of bucket in [from, to), copying what it sees.
func scan(tx kv.Tx, bucket string, from, to []byte) ([]pair, error) {
	var ps []pair
	err := tx.Scan(bucket, from, to, func(k, v []byte) error {
		ps = append(ps, pair{string(k), string(v)})
		return nil
	})
	return ps, err
}

func update(t *testing.T, db kv.DB, fn func(kv.Tx) error) {
	t.Helper()
	if err := db.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func view(t *testing.T, db kv.DB, fn func(kv.Tx) error) {
	t.Helper()
	if err := db.View(t.Context(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

// put sets keys of bucket in one Update: key, value, key, value...
func put(t *testing.T, db kv.DB, bucket string, kvs ...string) {
	t.Helper()
	update(t, db, func(tx kv.Tx) error {
		for i := 0; i+1 < len(kvs); i += 2 {
			if err := tx.Put(bucket, []byte(kvs[i]), []byte(kvs[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
}

// get reads a key in a View; ok is false when it is absent.
func get(t *testing.T, db kv.DB, bucket, key string) (v string, ok bool) {
	t.Helper()
	view(t, db, func(tx kv.Tx) error {
		b, err := tx.Get(bucket, []byte(key))
		v, ok = string(b), b != nil
		return err
	})
	return v, ok
}

// all is every pair of bucket, scanned in a View.
func all(t *testing.T, db kv.DB, bucket string) []pair {
	t.Helper()
	var ps []pair
	view(t, db, func(tx kv.Tx) error {
		var err error
		ps, err = scan(tx, bucket, nil, nil)
		return err
	})
	return ps
}

func wantPairs(t *testing.T, what string, got, want []pair) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s: got %v; want %v", what, got, want)
	}
}

// pairs makes pairs from key, value, key, value...
func pairs(kvs ...string) []pair {
	var ps []pair
	for i := 0; i+1 < len(kvs); i += 2 {
		ps = append(ps, pair{kvs[i], kvs[i+1]})
	}
	return ps
}

// Both kinds of transaction, for tests of reads.
var txKinds = []struct {
	name string
	run  func(kv.DB, context.Context, func(kv.Tx) error) error
}{
	{"View", kv.DB.View},
	{"Update", kv.DB.Update},
}

// Both kinds of read-write transaction.
var writeKinds = []struct {
	name string
	run  func(kv.DB, context.Context, func(kv.Tx) error) error
}{
	{"Update", kv.DB.Update},
	{"Batch", kv.DB.Batch},
}

func testGetMissing(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	put(t, db, "b", "x", "1")
	for _, kind := range txKinds {
		for _, c := range []struct{ bucket, key string }{
			{"none", "x"},        // missing bucket
			{"b", "y"},           // missing key
			{"b", "x\x00"},       // a key just after one that exists
			{"b", "\xff\xff"},    // after every key
			{"b", "\x00"},        // before every key
			{"none", "\x00\x01"}, // missing bucket, binary key
		} {
			err := kind.run(db, t.Context(), func(tx kv.Tx) error {
				v, err := tx.Get(c.bucket, []byte(c.key))
				if err != nil {
					return err
				}
				if v != nil {
					t.Errorf("%s: Get(%q, %q) = %q; want nil", kind.name, c.bucket, c.key, v)
				}
				return nil
			})
			if err != nil {
				t.Errorf("%s: Get(%q, %q): %v", kind.name, c.bucket, c.key, err)
			}
		}
		err := kind.run(db, t.Context(), func(tx kv.Tx) error {
			return tx.Scan("none", nil, nil, func(k, v []byte) error {
				t.Errorf("%s: scan of a missing bucket saw %q", kind.name, k)
				return nil
			})
		})
		if err != nil {
			t.Errorf("%s: scan of a missing bucket: %v", kind.name, err)
		}
	}
	// Reading absent keys in an Update writes nothing.
	wantPairs(t, "bucket b", all(t, db, "b"), pairs("x", "1"))
	wantPairs(t, "bucket none", all(t, db, "none"), nil)
}

func testRoundTrip(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	big := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	for _, c := range []struct {
		name, key string
		v1, v2    []byte
	}{
		{"text", "k", []byte("v"), []byte("w")},
		{"binary", "\x00\x01\xff", []byte("\xff\x00\x00"), []byte{0}},
		{"utf8", "clé", []byte("valeur"), []byte("été")},
		{"big value", "big", big, big[:1000]},
		{"long key", string(bytes.Repeat([]byte("k"), 400)), []byte("v"), []byte("")},
	} {
		t.Run(c.name, func(t *testing.T) {
			key := []byte(c.key)
			update(t, db, func(tx kv.Tx) error { return tx.Put("rt", key, c.v1) })
			if v, ok := get(t, db, "rt", c.key); !ok || v != string(c.v1) {
				t.Fatalf("after Put: Get = %.40q, %v; want %.40q", v, ok, c.v1)
			}
			update(t, db, func(tx kv.Tx) error { return tx.Put("rt", key, c.v2) })
			if v, ok := get(t, db, "rt", c.key); !ok || v != string(c.v2) {
				t.Fatalf("after overwrite: Get = %.40q, %v; want %.40q", v, ok, c.v2)
			}
			update(t, db, func(tx kv.Tx) error { return tx.Delete("rt", key) })
			if v, ok := get(t, db, "rt", c.key); ok {
				t.Fatalf("after Delete: Get = %.40q; want nil", v)
			}
			// Deleting a missing key, or in a missing bucket, is not an error.
			update(t, db, func(tx kv.Tx) error { return tx.Delete("rt", key) })
			update(t, db, func(tx kv.Tx) error { return tx.Delete("no such bucket", key) })
		})
	}
	wantPairs(t, "after the round trips", all(t, db, "rt"), nil)
}

func testEmptyValue(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	update(t, db, func(tx kv.Tx) error {
		if err := tx.Put("e", []byte("empty"), []byte{}); err != nil {
			return err
		}
		v, err := tx.Get("e", []byte("empty"))
		if err != nil {
			return err
		}
		if v == nil || len(v) != 0 {
			t.Errorf("Get in the writing transaction = %#v; want a non-nil empty value", v)
		}
		return nil
	})
	for _, kind := range txKinds {
		err := kind.run(db, t.Context(), func(tx kv.Tx) error {
			v, err := tx.Get("e", []byte("empty"))
			if err != nil {
				return err
			}
			if v == nil || len(v) != 0 {
				t.Errorf("%s: Get = %#v; want a non-nil empty value", kind.name, v)
			}
			n := 0
			err = tx.Scan("e", nil, nil, func(k, v []byte) error {
				n++
				if string(k) != "empty" || v == nil || len(v) != 0 {
					t.Errorf("%s: Scan saw %q = %#v; want \"empty\" with a non-nil empty value", kind.name, k, v)
				}
				return nil
			})
			if n != 1 {
				t.Errorf("%s: Scan saw %d keys; want 1", kind.name, n)
			}
			return err
		})
		if err != nil {
			t.Errorf("%s: %v", kind.name, err)
		}
	}
}

func testBuckets(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	// Bucket names that are prefixes of each other, or look like keys.
	put(t, db, "a", "k", "a1", "k2", "a2")
	put(t, db, "ab", "k", "ab1")
	put(t, db, "b", "k", "b1")
	put(t, db, "k", "a", "ka")
	for _, c := range []struct{ bucket, key, want string }{
		{"a", "k", "a1"}, {"ab", "k", "ab1"}, {"b", "k", "b1"}, {"k", "a", "ka"},
	} {
		if v, ok := get(t, db, c.bucket, c.key); !ok || v != c.want {
			t.Errorf("Get(%q, %q) = %q, %v; want %q", c.bucket, c.key, v, ok, c.want)
		}
	}
	if v, ok := get(t, db, "ab", "k2"); ok {
		t.Errorf("Get(ab, k2) = %q; want nil: k2 is in bucket a", v)
	}
	wantPairs(t, "scan a", all(t, db, "a"), pairs("k", "a1", "k2", "a2"))
	wantPairs(t, "scan ab", all(t, db, "ab"), pairs("k", "ab1"))
	update(t, db, func(tx kv.Tx) error { return tx.Delete("a", []byte("k")) })
	wantPairs(t, "scan a after Delete", all(t, db, "a"), pairs("k2", "a2"))
	wantPairs(t, "scan ab after a Delete in a", all(t, db, "ab"), pairs("k", "ab1"))
	wantPairs(t, "scan b after a Delete in a", all(t, db, "b"), pairs("k", "b1"))
}

// orderKeys are keys whose byte order is not their order as text in most
// collations, with 0x00 and 0xff bytes in every position.
var orderKeys = []string{
	"\x00", "\x00\x00", "\x00\x01", "\x00\xff", "\x01", "\x7f", "\x80", "\xfe",
	"\xff", "\xff\x00", "\xff\xff", "\xff\xff\xff",
	"A", "B", "Z", "_", "a", "a\x00", "a\x00b", "a\xff", "aa", "ab", "b", "z",
	"é", "e", "f", "1", "10", "2", " ", "-", "a-b", "a b", "ab ",
}

func testScanOrder(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	keys := slices.Clone(orderKeys)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	// Half in one transaction, the rest one a transaction.
	update(t, db, func(tx kv.Tx) error {
		for _, k := range keys[:len(keys)/2] {
			if err := tx.Put("o", []byte(k), []byte("v"+k)); err != nil {
				return err
			}
		}
		return nil
	})
	for _, k := range keys[len(keys)/2:] {
		put(t, db, "o", k, "v"+k)
	}
	slices.SortFunc(keys, func(a, b string) int { return bytes.Compare([]byte(a), []byte(b)) })
	var want []pair
	for _, k := range keys {
		want = append(want, pair{k, "v" + k})
	}
	for _, kind := range txKinds {
		var got []pair
		err := kind.run(db, t.Context(), func(tx kv.Tx) error {
			var err error
			got, err = scan(tx, "o", nil, nil)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", kind.name, err)
		}
		wantPairs(t, kind.name+": scan order", got, want)
	}
}

func testScanBounds(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	put(t, db, "s", "a", "1", "b", "2", "b\x00", "3", "c", "4", "d\xff", "5", "e", "6")
	everything := []string{"a", "b", "b\x00", "c", "d\xff", "e"}
	s := func(v string) []byte { return []byte(v) }
	for _, c := range []struct {
		name     string
		from, to []byte
		want     []string
	}{
		{"nil nil", nil, nil, everything},
		{"empty from", s(""), nil, everything},
		{"from a key", s("b"), nil, []string{"b", "b\x00", "c", "d\xff", "e"}},
		{"to a key, exclusive", nil, s("c"), []string{"a", "b", "b\x00"}},
		{"from and to keys", s("b"), s("c"), []string{"b", "b\x00"}},
		{"from a key with 0x00", s("b\x00"), s("c"), []string{"b\x00"}},
		{"bounds between keys", s("bb"), s("d"), []string{"c"}},
		{"to just after a key", s("a"), s("a\x00"), []string{"a"}},
		{"to a key's prefix", s("d"), s("d\xff"), nil},
		{"to just after a 0xff key", s("d"), s("d\xff\x00"), []string{"d\xff"}},
		{"from after the last", s("f"), nil, nil},
		{"from == to", s("c"), s("c"), nil},
		{"from > to", s("d"), s("c"), nil},
		{"empty to", nil, s(""), nil},
		{"to 0xff", s("c"), s("\xff"), []string{"c", "d\xff", "e"}},
	} {
		for _, kind := range txKinds {
			var got []pair
			err := kind.run(db, t.Context(), func(tx kv.Tx) error {
				var err error
				got, err = scan(tx, "s", c.from, c.to)
				return err
			})
			if err != nil {
				t.Errorf("%s %s: %v", kind.name, c.name, err)
				continue
			}
			var keys []string
			for _, p := range got {
				keys = append(keys, p.k)
			}
			if !slices.Equal(keys, c.want) {
				t.Errorf("%s %s: Scan(%q, %q) = %q; want %q", kind.name, c.name, c.from, c.to, keys, c.want)
			}
		}
	}
}

func testScanStop(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	for i := range 10 {
		put(t, db, "s", fmt.Sprintf("k%d", i), strconv.Itoa(i))
	}
	errBoom := errors.New("boom")
	for _, kind := range txKinds {
		for _, c := range []struct {
			name    string
			at      int   // the call that returns ret (1 for the first)
			ret     error // what the scan function returns then
			wantErr error
		}{
			{"Stop at the first", 1, kv.Stop, nil},
			{"Stop at the third", 3, kv.Stop, nil},
			{"Stop at the last", 10, kv.Stop, nil},
			{"error at the first", 1, errBoom, errBoom},
			{"error at the fourth", 4, errBoom, errBoom},
			{"wrapped error", 2, fmt.Errorf("wrapped: %w", errBoom), errBoom},
		} {
			var calls int
			var scanErr error
			err := kind.run(db, t.Context(), func(tx kv.Tx) error {
				calls = 0
				scanErr = tx.Scan("s", nil, nil, func(k, v []byte) error {
					calls++
					if calls == c.at {
						return c.ret
					}
					if calls > c.at {
						t.Errorf("%s %s: scan went on after call %d", kind.name, c.name, c.at)
					}
					return nil
				})
				return scanErr
			})
			if calls != c.at {
				t.Errorf("%s %s: %d calls; want %d", kind.name, c.name, calls, c.at)
			}
			if c.wantErr == nil {
				if scanErr != nil || err != nil {
					t.Errorf("%s %s: Scan = %v, transaction = %v; want nil (Stop is no error)", kind.name, c.name, scanErr, err)
				}
				continue
			}
			if !errors.Is(scanErr, c.wantErr) {
				t.Errorf("%s %s: Scan = %v; want %v", kind.name, c.name, scanErr, c.wantErr)
			}
			if !errors.Is(err, c.wantErr) {
				t.Errorf("%s %s: transaction = %v; want %v", kind.name, c.name, err, c.wantErr)
			}
		}
	}
}

// testScanLarge scans more keys than an implementation would reasonably
// read in one go, and reads and writes elsewhere from the scan function.
func testScanLarge(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	const n = 2500
	key := func(i int) []byte { return fmt.Appendf(nil, "k%05d", i) }
	update(t, db, func(tx kv.Tx) error {
		for i := range n {
			if err := tx.Put("big", key(i), []byte(strconv.Itoa(i))); err != nil {
				return err
			}
		}
		return nil
	})
	check := func(what string, tx kv.Tx, from, to []byte, stopAfter, first, want int) {
		t.Helper()
		i := first
		err := tx.Scan("big", from, to, func(k, v []byte) error {
			if !bytes.Equal(k, key(i)) || string(v) != strconv.Itoa(i) {
				return fmt.Errorf("saw %q=%q; want %q=%d", k, v, key(i), i)
			}
			i++
			if i-first == stopAfter {
				return kv.Stop
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
		if i-first != want {
			t.Errorf("%s: %d keys; want %d", what, i-first, want)
		}
	}
	for _, kind := range txKinds {
		err := kind.run(db, t.Context(), func(tx kv.Tx) error {
			check(kind.name+": all", tx, nil, nil, -1, 0, n)
			check(kind.name+": [500, 2100)", tx, key(500), key(2100), -1, 500, 1600)
			check(kind.name+": Stop after 1500", tx, nil, nil, 1500, 0, 1500)
			check(kind.name+": from 1999, Stop after 2", tx, key(1999), nil, 2, 1999, 2)
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", kind.name, err)
		}
	}
	// Reads of any bucket, and writes to another, from the scan function.
	update(t, db, func(tx kv.Tx) error {
		i := 0
		return tx.Scan("big", nil, nil, func(k, v []byte) error {
			if i%100 == 0 {
				other, err := tx.Get("big", key(n-1-i))
				if err != nil {
					return err
				}
				if string(other) != strconv.Itoa(n-1-i) {
					return fmt.Errorf("get during the scan = %q; want %d", other, n-1-i)
				}
				if err := tx.Put("index", v, k); err != nil {
					return err
				}
			}
			i++
			return nil
		})
	})
	if got := len(all(t, db, "index")); got != n/100 {
		t.Errorf("%d keys written during the scan; want %d", got, n/100)
	}
}

func testPrefixEnd(t *testing.T, open func(t *testing.T) kv.DB) {
	for _, c := range []struct {
		prefix string
		want   []byte
	}{
		{"", nil},
		{"a", []byte("b")},
		{"ab", []byte("ac")},
		{"a\x00", []byte("a\x01")},
		{"a\xff", []byte("b")},
		{"ab\xff\xff", []byte("ac")},
		{"\xfe\xff", []byte("\xff")},
		{"\xff", nil},
		{"\xff\xff\xff", nil},
	} {
		got := kv.PrefixEnd([]byte(c.prefix))
		if !bytes.Equal(got, c.want) || (got == nil) != (c.want == nil) {
			t.Errorf("PrefixEnd(%q) = %q; want %q", c.prefix, got, c.want)
		}
	}
	// PrefixEnd does not write into its argument.
	p := []byte("az")
	kv.PrefixEnd(p[:1])
	if string(p) != "az" {
		t.Errorf("PrefixEnd changed its argument's array: %q", p)
	}
}

func testScanPrefix(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	// In byte order.
	keys := []string{"", "a", "a\x00", "ab", "abc", "ac", "a\xff", "a\xff\xff", "a\xff\xff\x00", "b", "\xff", "\xff\x00", "\xff\xff"}
	update(t, db, func(tx kv.Tx) error {
		for _, k := range keys[1:] { // bbolt refuses an empty key
			if err := tx.Put("p", []byte(k), []byte("v")); err != nil {
				return err
			}
		}
		return nil
	})
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", keys[1:]},
		{"a", []string{"a", "a\x00", "ab", "abc", "ac", "a\xff", "a\xff\xff", "a\xff\xff\x00"}},
		{"a\xff", []string{"a\xff", "a\xff\xff", "a\xff\xff\x00"}},
		{"a\xff\xff", []string{"a\xff\xff", "a\xff\xff\x00"}},
		{"ab", []string{"ab", "abc"}},
		{"\xff", []string{"\xff", "\xff\x00", "\xff\xff"}},
		{"\xff\xff", []string{"\xff\xff"}},
		{"c", nil},
	} {
		for _, kind := range txKinds {
			var got []string
			err := kind.run(db, t.Context(), func(tx kv.Tx) error {
				got = nil
				return kv.ScanPrefix(tx, "p", []byte(c.prefix), func(k, v []byte) error {
					got = append(got, string(k))
					return nil
				})
			})
			if err != nil {
				t.Errorf("%s: ScanPrefix(%q): %v", kind.name, c.prefix, err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("%s: ScanPrefix(%q) = %q; want %q", kind.name, c.prefix, got, c.want)
			}
		}
	}
}

func testRollback(t *testing.T, open func(t *testing.T) kv.DB) {
	errBoom := errors.New("boom")
	for _, kind := range writeKinds {
		for _, c := range []struct {
			name string
			ret  error
		}{
			{"error", errBoom},
			{"wrapped error", fmt.Errorf("wrapped: %w", errBoom)},
		} {
			t.Run(kind.name+" "+c.name, func(t *testing.T) {
				db := open(t)
				put(t, db, "r", "keep", "old", "gone", "x")
				err := kind.run(db, t.Context(), func(tx kv.Tx) error {
					for _, w := range [][3]string{{"r", "keep", "new"}, {"r", "new", "1"}, {"r2", "k", "v"}} {
						if err := tx.Put(w[0], []byte(w[1]), []byte(w[2])); err != nil {
							return err
						}
					}
					if err := tx.Delete("r", []byte("gone")); err != nil {
						return err
					}
					if v, err := tx.Get("r", []byte("keep")); err != nil || string(v) != "new" {
						return fmt.Errorf("get before the error = %q, %v", v, err)
					}
					return c.ret
				})
				if !errors.Is(err, errBoom) {
					t.Fatalf("%s = %v; want %v", kind.name, err, errBoom)
				}
				if err.Error() != c.ret.Error() {
					t.Errorf("%s = %q; want the function's error unchanged, %q", kind.name, err, c.ret)
				}
				wantPairs(t, "bucket r", all(t, db, "r"), pairs("gone", "x", "keep", "old"))
				wantPairs(t, "bucket r2", all(t, db, "r2"), nil)
			})
		}
	}
}

func testReadOnly(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	put(t, db, "ro", "k", "v")
	err := db.View(t.Context(), func(tx kv.Tx) error {
		for _, c := range []struct {
			name string
			err  error
		}{
			{"Put", tx.Put("ro", []byte("k"), []byte("w"))},
			{"Put of a new key", tx.Put("ro", []byte("n"), []byte("w"))},
			{"Put in a new bucket", tx.Put("new", []byte("n"), []byte("w"))},
			{"Delete", tx.Delete("ro", []byte("k"))},
			{"Delete of a missing key", tx.Delete("ro", []byte("missing"))},
		} {
			if !errors.Is(c.err, kv.ErrReadOnly) {
				t.Errorf("%s in a View = %v; want %v", c.name, c.err, kv.ErrReadOnly)
			}
		}
		// The transaction is still usable.
		if v, err := tx.Get("ro", []byte("k")); err != nil || string(v) != "v" {
			t.Errorf("Get after refused writes = %q, %v; want v", v, err)
		}
		return nil
	})
	if err != nil {
		t.Errorf("View: %v", err)
	}
	err = db.View(t.Context(), func(tx kv.Tx) error { return tx.Put("ro", []byte("k"), []byte("w")) })
	if !errors.Is(err, kv.ErrReadOnly) {
		t.Errorf("View returning the Put error = %v; want %v", err, kv.ErrReadOnly)
	}
	wantPairs(t, "bucket ro", all(t, db, "ro"), pairs("k", "v"))
	wantPairs(t, "bucket new", all(t, db, "new"), nil)
}

func testReadYourWrites(t *testing.T, open func(t *testing.T) kv.DB) {
	for _, kind := range writeKinds {
		t.Run(kind.name, func(t *testing.T) {
			db := open(t)
			put(t, db, "w", "committed", "c", "zz", "z")
			err := kind.run(db, t.Context(), func(tx kv.Tx) error {
				step := ""
				must := func(what string, got, want []pair, err error) {
					if err != nil {
						t.Errorf("%s: %v", what, err)
					}
					wantPairs(t, step+": "+what, got, want)
				}
				getp := func(b, k string) []pair {
					v, err := tx.Get(b, []byte(k))
					if err != nil {
						t.Errorf("%s: Get(%q): %v", step, k, err)
					}
					if v == nil {
						return nil
					}
					return []pair{{k, string(v)}}
				}
				do := func(what string, err error) {
					step = what
					if err != nil {
						t.Errorf("%s: %v", what, err)
					}
				}

				do("Put b", tx.Put("w", []byte("b"), []byte("1")))
				must("Get b", getp("w", "b"), pairs("b", "1"), nil)
				ps, err := scan(tx, "w", nil, nil)
				must("Scan", ps, pairs("b", "1", "committed", "c", "zz", "z"), err)

				do("Put a", tx.Put("w", []byte("a"), []byte("2")))
				ps, err = scan(tx, "w", nil, []byte("c"))
				must("Scan to c", ps, pairs("a", "2", "b", "1"), err)

				do("overwrite a", tx.Put("w", []byte("a"), []byte("3")))
				must("Get a", getp("w", "a"), pairs("a", "3"), nil)
				ps, err = scan(tx, "w", []byte("a"), []byte("b"))
				must("Scan [a, b)", ps, pairs("a", "3"), err)

				do("Delete a", tx.Delete("w", []byte("a")))
				must("Get a", getp("w", "a"), nil, nil)
				do("Delete committed", tx.Delete("w", []byte("committed")))
				ps, err = scan(tx, "w", nil, nil)
				must("Scan", ps, pairs("b", "1", "zz", "z"), err)

				// A key first read as absent, then written twice, deleted and
				// written again.
				must("Get x", getp("w", "x"), nil, nil)
				do("Put x", tx.Put("w", []byte("x"), []byte("4")))
				do("Put x again", tx.Put("w", []byte("x"), []byte("5")))
				must("Get x", getp("w", "x"), pairs("x", "5"), nil)
				do("Delete x", tx.Delete("w", []byte("x")))
				must("Get x", getp("w", "x"), nil, nil)
				do("Put x after Delete", tx.Put("w", []byte("x"), []byte("6")))
				must("Get x", getp("w", "x"), pairs("x", "6"), nil)

				// A bucket made in this transaction.
				do("Put in a new bucket", tx.Put("new", []byte("n"), []byte("7")))
				must("Get in the new bucket", getp("new", "n"), pairs("n", "7"), nil)
				ps, err = scan(tx, "new", nil, nil)
				must("Scan of the new bucket", ps, pairs("n", "7"), err)
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", kind.name, err)
			}
			wantPairs(t, "bucket w after the commit", all(t, db, "w"), pairs("b", "1", "x", "6", "zz", "z"))
			wantPairs(t, "bucket new after the commit", all(t, db, "new"), pairs("n", "7"))
		})
	}
}

// testConsistentView updates two keys (in two buckets) together while
// Views read them: every View sees both from the same commit.
func testConsistentView(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	put(t, db, "x", "a", "0")
	put(t, db, "y", "b", "0")
	const writes = 150
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		for i := 1; i <= writes; i++ {
			v := []byte(strconv.Itoa(i))
			err := db.Update(t.Context(), func(tx kv.Tx) error {
				if err := tx.Put("x", []byte("a"), v); err != nil {
					return err
				}
				return tx.Put("y", []byte("b"), v)
			})
			if err != nil {
				t.Errorf("writer: %v", err)
				return
			}
		}
	})
	var views sync.Map // how many views each reader made
	for r := range 3 {
		wg.Go(func() {
			n := 0
			defer func() { views.Store(r, n) }()
			for {
				select {
				case <-done:
					return
				default:
				}
				n++
				var a, b, sa, sb string
				err := db.View(t.Context(), func(tx kv.Tx) error {
					va, err := tx.Get("x", []byte("a"))
					if err != nil {
						return err
					}
					ps, err := scan(tx, "y", nil, nil)
					if err != nil {
						return err
					}
					vb, err := tx.Get("y", []byte("b"))
					if err != nil {
						return err
					}
					qs, err := scan(tx, "x", nil, nil)
					if err != nil {
						return err
					}
					if len(ps) != 1 || len(qs) != 1 {
						return fmt.Errorf("scans saw %v and %v; want one key each", ps, qs)
					}
					a, b, sa, sb = string(va), string(vb), qs[0].v, ps[0].v
					return nil
				})
				if err != nil {
					t.Errorf("reader: %v", err)
					return
				}
				if a != b || a != sa || a != sb {
					t.Errorf("a View saw a=%s b=%s and by scans a=%s b=%s; want them all equal", a, b, sa, sb)
					return
				}
			}
		})
	}
	wg.Wait()
	if v, _ := get(t, db, "x", "a"); v != strconv.Itoa(writes) {
		t.Errorf("a = %s after the writer; want %d", v, writes)
	}
}

// increment adds one to the decimal counter at b/k, or makes it 1, reading
// it with Get or with a Scan.
func increment(tx kv.Tx, b string, k []byte, byScan bool) error {
	var v []byte
	var err error
	if byScan {
		err = tx.Scan(b, k, append(slices.Clone(k), 0), func(_, val []byte) error {
			v = slices.Clone(val)
			return nil
		})
	} else {
		v, err = tx.Get(b, k)
	}
	if err != nil {
		return err
	}
	n := 0
	if v != nil {
		if n, err = strconv.Atoi(string(v)); err != nil {
			return fmt.Errorf("counter %q: %v", v, err)
		}
	}
	return tx.Put(b, k, []byte(strconv.Itoa(n+1)))
}

// testConcurrentIncrement runs 8 goroutines of 50 read-modify-write
// increments of one counter, read by Get (the counter starts absent) or by
// Scan: no increment is lost.
func testConcurrentIncrement(t *testing.T, open func(t *testing.T) kv.DB) {
	const goroutines, each = 8, 50
	for _, kind := range writeKinds {
		for _, byScan := range []bool{false, true} {
			name := kind.name + " Get"
			if byScan {
				name = kind.name + " Scan"
			}
			t.Run(name, func(t *testing.T) {
				db := open(t)
				if byScan {
					// A scan guards the keys it sees, not the absence of
					// others (see kv.Tx.Scan): start from a counter that is
					// there.
					put(t, db, "c", "n", "0")
				}
				var wg sync.WaitGroup
				for range goroutines {
					wg.Go(func() {
						for range each {
							err := kind.run(db, t.Context(), func(tx kv.Tx) error {
								return increment(tx, "c", []byte("n"), byScan)
							})
							if err != nil {
								t.Errorf("increment: %v", err)
								return
							}
						}
					})
				}
				wg.Wait()
				if v, _ := get(t, db, "c", "n"); v != strconv.Itoa(goroutines*each) {
					t.Errorf("counter = %q; want %d", v, goroutines*each)
				}
			})
		}
	}
}

// testCreateRace has 16 goroutines create one key if it is absent, each
// in its own transaction: exactly one of them creates it.
func testCreateRace(t *testing.T, open func(t *testing.T) kv.DB) {
	const goroutines = 16
	for _, kind := range writeKinds {
		t.Run(kind.name, func(t *testing.T) {
			db := open(t)
			for round := range 3 {
				key := fmt.Appendf(nil, "k%d", round)
				winnersKey := fmt.Appendf(nil, "winner%d", round)
				won := make([]bool, goroutines)
				var wg sync.WaitGroup
				for g := range goroutines {
					wg.Go(func() {
						me := fmt.Appendf(nil, "g%d", g)
						err := kind.run(db, t.Context(), func(tx kv.Tx) error {
							won[g] = false
							v, err := tx.Get("race", key)
							if err != nil || v != nil {
								return err
							}
							if err := tx.Put("race", key, me); err != nil {
								return err
							}
							if err := tx.Put("race", winnersKey, me); err != nil {
								return err
							}
							won[g] = true
							return nil
						})
						if err != nil {
							t.Errorf("%s: %v", me, err)
						}
					})
				}
				wg.Wait()
				var winners []string
				for g, w := range won {
					if w {
						winners = append(winners, fmt.Sprintf("g%d", g))
					}
				}
				if len(winners) != 1 {
					t.Fatalf("round %d: %d goroutines created the key (%v); want exactly one", round, len(winners), winners)
				}
				if v, _ := get(t, db, "race", string(key)); v != winners[0] {
					t.Errorf("round %d: key = %q; want the winner's %q", round, v, winners[0])
				}
				if v, _ := get(t, db, "race", string(winnersKey)); v != winners[0] {
					t.Errorf("round %d: winner recorded = %q; want %q", round, v, winners[0])
				}
			}
		})
	}
}

// testOversell has 200 buyers for a stock of 50, each taking one and
// recording a sale when the stock is not exhausted.
func testOversell(t *testing.T, open func(t *testing.T) kv.DB) {
	const stock, buyers = 50, 200
	db := open(t)
	put(t, db, "stock", "item", strconv.Itoa(stock))
	sold := make([]bool, buyers)
	var wg sync.WaitGroup
	for i := range buyers {
		wg.Go(func() {
			err := db.Update(t.Context(), func(tx kv.Tx) error {
				sold[i] = false
				v, err := tx.Get("stock", []byte("item"))
				if err != nil {
					return err
				}
				n, err := strconv.Atoi(string(v))
				if err != nil {
					return fmt.Errorf("stock %q: %v", v, err)
				}
				if n <= 0 {
					return nil
				}
				if err := tx.Put("stock", []byte("item"), []byte(strconv.Itoa(n-1))); err != nil {
					return err
				}
				if err := tx.Put("sales", fmt.Appendf(nil, "sale/%03d", i), []byte(strconv.Itoa(n))); err != nil {
					return err
				}
				sold[i] = true
				return nil
			})
			if err != nil {
				t.Errorf("buyer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if v, _ := get(t, db, "stock", "item"); v != "0" {
		t.Errorf("stock = %q; want 0", v)
	}
	var sales []pair
	view(t, db, func(tx kv.Tx) error {
		sales = nil
		return kv.ScanPrefix(tx, "sales", []byte("sale/"), func(k, v []byte) error {
			sales = append(sales, pair{string(k), string(v)})
			return nil
		})
	})
	if len(sales) != stock {
		t.Errorf("%d sales recorded; want %d", len(sales), stock)
	}
	// Each sale took a different unit of the stock.
	units := map[string]bool{}
	for _, s := range sales {
		if units[s.v] {
			t.Errorf("unit %s sold twice", s.v)
		}
		units[s.v] = true
	}
	n := 0
	for i, s := range sold {
		if s {
			n++
			if _, ok := get(t, db, "sales", fmt.Sprintf("sale/%03d", i)); !ok {
				t.Errorf("buyer %d was told it bought, but no sale is recorded", i)
			}
		}
	}
	if n != stock {
		t.Errorf("%d buyers were told they bought; want %d", n, stock)
	}
}

func testCopy(t *testing.T, open func(t *testing.T) kv.DB) {
	src, dst := open(t), open(t)
	var want []pair
	update(t, src, func(tx kv.Tx) error {
		want = nil
		// 10 keys, including one that is another followed by 0x00, at a
		// batch boundary of 3 (the copy resumes after key+0x00).
		for _, k := range []string{"k0", "k1", "k2", "k2\x00", "k3", "k4", "k5", "k6", "k7", "\xff"} {
			v := "v" + k
			if err := tx.Put("a", []byte(k), []byte(v)); err != nil {
				return err
			}
			want = append(want, pair{k, v})
		}
		for i := range 7 {
			if err := tx.Put("b", fmt.Appendf(nil, "%d", i), []byte{}); err != nil {
				return err
			}
		}
		return tx.Put("not copied", []byte("x"), []byte("y"))
	})
	slices.SortFunc(want, func(a, b pair) int { return bytes.Compare([]byte(a.k), []byte(b.k)) })
	put(t, dst, "a", "k1", "old", "only in dst", "kept")
	n, err := kv.Copy(t.Context(), dst, src, []string{"a", "b", "missing"}, 3)
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if n != 17 {
		t.Errorf("Copy copied %d keys; want 17", n)
	}
	want = append(want, pair{"only in dst", "kept"})
	slices.SortFunc(want, func(a, b pair) int { return bytes.Compare([]byte(a.k), []byte(b.k)) })
	wantPairs(t, "dst bucket a", all(t, dst, "a"), want)
	wantPairs(t, "dst bucket b", all(t, dst, "b"), pairs("0", "", "1", "", "2", "", "3", "", "4", "", "5", "", "6", ""))
	wantPairs(t, "dst bucket not copied", all(t, dst, "not copied"), nil)
	wantPairs(t, "dst bucket missing", all(t, dst, "missing"), nil)
	// The source is unchanged.
	if got := len(all(t, src, "a")); got != 10 {
		t.Errorf("src bucket a has %d keys after the copy; want 10", got)
	}
	// A bucket of exactly a batch's multiple, and the default batch.
	for _, batch := range []int{5, 0} {
		n, err := kv.Copy(t.Context(), dst, src, []string{"a"}, batch)
		if err != nil || n != 10 {
			t.Errorf("Copy with batch %d = %d, %v; want 10", batch, n, err)
		}
	}
}

func testCancelled(t *testing.T, open func(t *testing.T) kv.DB) {
	db := open(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, kind := range append(slices.Clone(txKinds), writeKinds[1]) {
		ran := false
		err := kind.run(db, ctx, func(tx kv.Tx) error {
			ran = true
			return tx.Put("c", []byte("k"), []byte("v"))
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context = %v; want an error wrapping %v", kind.name, err, context.Canceled)
		}
		if ran {
			t.Errorf("%s with a cancelled context ran its function", kind.name)
		}
	}
	wantPairs(t, "bucket c", all(t, db, "c"), nil)
}

// BenchmarkCounter increments one counter from parallel goroutines, each
// increment a read-modify-write Update, at 1 and 8 goroutines a CPU: the
// cost of contention on one key, the same for every store, so their
// figures compare. It checks the count at the end.
func BenchmarkCounter(b *testing.B, db kv.DB) {
	runs := 0
	for _, par := range []int{1, 8} {
		b.Run("par="+strconv.Itoa(par), func(b *testing.B) {
			runs++
			key := []byte("counter" + strconv.Itoa(runs)) // a new counter each run
			b.SetParallelism(par)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					err := db.Update(b.Context(), func(tx kv.Tx) error {
						v, err := tx.Get("bench", key)
						if err != nil {
							return err
						}
						n := 0
						if v != nil {
							n, _ = strconv.Atoi(string(v))
						}
						return tx.Put("bench", key, []byte(strconv.Itoa(n+1)))
					})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			var got []byte
			db.View(b.Context(), func(tx kv.Tx) error {
				v, err := tx.Get("bench", key)
				got = append(got[:0], v...)
				return err
			})
			if string(got) != strconv.Itoa(b.N) {
				b.Errorf("counter = %q after %d increments", got, b.N)
			}
		})
	}
}
