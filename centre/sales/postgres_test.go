package sales_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gated-dev/gated/centre/sales"
	"github.com/gated-dev/gated/internal/pgtest"
	"github.com/gated-dev/gated/kv"
	"github.com/gated-dev/gated/kv/pgkv"
)

// TestPostgres runs the sales suite again with the books in PostgreSQL
// (kv/pgkv) instead of bbolt: the same HTTP API, the same rules, the same
// assertions and golden answers. The suite is the conformance test of the
// two sales stores. Each test keeps its books in a table of its own on one
// throwaway cluster.
func TestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the PostgreSQL run of the sales suite is skipped")
	}
	cl := pgtest.Start(t, pgtest.Options{})
	pgDSN.Store(&cl.DSN)
	t.Cleanup(func() { pgDSN.Store(nil) })
	ran := 0
	for _, tc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"NoOversell", TestNoOversell},
		{"StockShards", TestStockShards},
		{"BuyPayIssue", TestBuyPayIssue},
		{"Login", TestLogin},
		{"OrderRefusals", TestOrderRefusals},
		{"RefusalsGolden", TestRefusalsGolden},
		{"RateLimits", TestRateLimits},
		{"NotificationIdempotent", TestNotificationIdempotent},
		{"ConcurrentFirstNotifications", TestConcurrentFirstNotifications},
		{"NotificationRefused", TestNotificationRefused},
		{"HoldExpires", TestHoldExpires},
		{"ReconcileStuckOrder", TestReconcileStuckOrder},
		{"ReconcileQueryCap", TestReconcileQueryCap},
		{"IssueFailureResumed", TestIssueFailureResumed},
		{"LostIssueAnswer", TestLostIssueAnswer},
		{"LatePayment", TestLatePayment},
		{"StandaloneNotFound", TestStandaloneNotFound},
		{"RateLimitBehindProxy", TestRateLimitBehindProxy},
		{"Refund", TestRefund},
		{"RefundResumedAfterFailures", TestRefundResumedAfterFailures},
		{"Transfer", TestTransfer},
		{"TransferFinishedByReconcile", TestTransferFinishedByReconcile},
		{"TransferIDLimitAndExpiry", TestTransferIDLimitAndExpiry},
		{"Freeze", TestFreeze},
		{"RealNameOrders", TestRealNameOrders},
		{"RealNameStorageAndPurge", TestRealNameStorageAndPurge},
		{"RotatingCentreBindsDeviceKeys", TestRotatingCentreBindsDeviceKeys},
		{"RotatingDeviceKeys", TestRotatingDeviceKeys},
	} {
		t.Run(tc.name, func(t *testing.T) { ran++; tc.run(t) })
	}
	if n := int(pgTables.Load()); n < ran {
		t.Fatalf("%d tests ran, only %d kept their books in PostgreSQL", ran, n)
	}
}

// pgDSN is the cluster of a running TestPostgres; tests under it keep
// their books there.
var (
	pgDSN    atomic.Pointer[string]
	pgTables atomic.Int32
)

// openTestStore opens the sales store of a test: a bbolt file at path, or
// under TestPostgres a fresh table on its cluster.
func openTestStore(t testing.TB, path string) (st *sales.Store, onPostgres bool) {
	t.Helper()
	dsn := pgDSN.Load()
	if dsn == nil || !strings.HasPrefix(t.Name(), "TestPostgres/") {
		st, err := sales.OpenStore(path)
		if err != nil {
			t.Fatal(err)
		}
		return st, false
	}
	db, err := pgkv.Open(context.Background(), *dsn, pgkv.Options{Table: fmt.Sprintf("sales_%d", pgTables.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	return sales.NewStore(db), true
}

// storedBytes is every key and value in the store, for checking what it
// holds whatever the backend.
func storedBytes(t testing.TB, st *sales.Store) []byte {
	t.Helper()
	var all []byte
	err := st.DB().View(context.Background(), func(tx kv.Tx) error {
		all = nil
		for _, b := range sales.Buckets {
			if err := tx.Scan(b, nil, nil, func(k, v []byte) error {
				all = append(append(all, k...), v...)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return all
}
