package sales

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"

	"github.com/gated-dev/gated/kv"
)

// A tier's stock is kept in one or more counters, its shards, whose sum is
// what remains. Every buyer of a tier writes its stock, and on PostgreSQL a
// write transaction holds the row it read until its commit: with one
// counter, buyers of a hot tier commit one after another. With shards,
// each buyer takes from the shard its openid picks, so up to that many
// orders commit at once. bbolt runs one writer at a time anyway, so one
// shard is its default (Config.StockShards).
//
// Keys: shard 0 is the tier's key (event\0type\0tier, as before shards
// existed); shard i > 0 is that key followed by "\0#" and i in two digits,
// so the shards of a tier are one range of keys, in shard order, and no
// other tier's key falls inside it (ids have no NUL, and a longer tier id
// continues with a byte above NUL).
//
// Deadlocks are avoided by order: a transaction takes shards in ascending
// order, and takes any stock after the buyer's and holders' counters.

// MaxStockShards is the most shards a tier may have.
const MaxStockShards = 64

func shardKey(tier []byte, i int) []byte {
	if i == 0 {
		return tier
	}
	return fmt.Appendf(append([]byte(nil), tier...), "\x00#%02d", i)
}

// shardRange is the range of keys of a tier's shards, for Scan.
func shardRange(tier []byte) (from, to []byte) {
	return tier, append(append([]byte(nil), tier...), 0, '$')
}

// ownShard is the shard a buyer takes from first.
func ownShard(openid string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(openid))
	return int(h.Sum32() % uint32(shards))
}

// counter decodes a stored counter (putU64); anything else counts 0.
func counter(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// totalStock sums a tier's shards, whatever their number. In a write
// transaction it holds every shard until the commit.
func totalStock(tx kv.Tx, tier []byte) (uint64, error) {
	from, to := shardRange(tier)
	var n uint64
	err := tx.Scan(bStock, from, to, func(_, v []byte) error {
		n += counter(v)
		return nil
	})
	return n, err
}

// takeStock takes qty from a tier's shards first..shards-1, in that order,
// and reports whether they covered it, and how much they held. When they
// did not, nothing is written.
func takeStock(tx kv.Tx, tier []byte, shards, first, qty int) (ok bool, seen uint64, err error) {
	type part struct {
		i    int
		left uint64
	}
	var parts []part
	need := uint64(qty)
	for i := first; i < shards && need > 0; i++ {
		rem, err := getU64(tx, bStock, shardKey(tier, i))
		if err != nil {
			return false, seen, err
		}
		seen += rem
		if rem == 0 {
			continue
		}
		t := min(rem, need)
		parts = append(parts, part{i, rem - t})
		need -= t
	}
	if need > 0 {
		return false, seen, nil
	}
	for _, p := range parts {
		if err := putU64(tx, bStock, shardKey(tier, p.i), p.left); err != nil {
			return false, seen, err
		}
	}
	return true, seen, nil
}

// giveStock puts qty back into the buyer's own shard.
func giveStock(tx kv.Tx, tier []byte, shards int, openid string, qty int) error {
	k := shardKey(tier, ownShard(openid, shards))
	rem, err := getU64(tx, bStock, k)
	if err != nil {
		return err
	}
	return putU64(tx, bStock, k, rem+uint64(qty))
}

// syncStock sets up stock for every tier in shards shards; a quota
// changed in the config moves the remaining stock by the difference,
// never below zero, and a changed number of shards spreads what remains
// over the new ones.
func (s *Store) syncStock(events []Event, shards int) error {
	return s.db.Update(bg, func(tx kv.Tx) error {
		for _, ev := range events {
			for _, tt := range ev.Types {
				for _, tr := range tt.Tiers {
					k := key(ev.ID, tt.ID, tr.ID)
					old, had, err := lookU64(tx, bQuota, k)
					if err != nil {
						return err
					}
					from, to := shardRange(k)
					var rem uint64
					var keys [][]byte
					if err := tx.Scan(bStock, from, to, func(sk, v []byte) error {
						keys = append(keys, append([]byte(nil), sk...))
						rem += counter(v)
						return nil
					}); err != nil {
						return err
					}
					q := uint64(tr.Quota)
					switch {
					case !had:
						rem = q
					case q > old:
						rem += q - old
					case old-q > rem:
						rem = 0
					default:
						rem -= old - q
					}
					if err := putU64(tx, bQuota, k, q); err != nil {
						return err
					}
					for _, sk := range keys {
						if err := tx.Delete(bStock, sk); err != nil {
							return err
						}
					}
					// Evenly, the odd ones in the lowest shards.
					for i := range shards {
						n := rem / uint64(shards)
						if uint64(i) < rem%uint64(shards) {
							n++
						}
						if err := putU64(tx, bStock, shardKey(k, i), n); err != nil {
							return err
						}
					}
				}
			}
		}
		return nil
	})
}
