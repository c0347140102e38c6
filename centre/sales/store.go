package sales

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gated-dev/gated/kv"
	"github.com/gated-dev/gated/kv/boltkv"
)

// Buckets of the sales store (kv buckets). Keys that combine parts
// separate them with 0x00, which no id contains.
const (
	bStock     = "stock"        // event\0type\0tier[\0#NN] -> remaining in that shard (uint64, stock.go)
	bQuota     = "quota"        // event\0type\0tier -> configured quota (uint64)
	bOrders    = "orders"       // order no -> Order
	bHolds     = "holds"        // hold-until (unix nanos, 8 bytes) || order no -> nil
	bUserOrds  = "userorders"   // openid\0no -> nil
	bTickets   = "tickets"      // ticket id -> TicketRec
	bOwned     = "owned"        // openid\0ticket id -> nil
	bUserCount = "usercount"    // event\0openid -> tickets bought (uint64)
	bIDCount   = "idcount"      // event\0id hmac -> tickets held (uint64)
	bSessions  = "sessions"     // sha256(token) -> Session
	bPayments  = "payments"     // transaction_id -> order no
	bRefunds   = "refunds"      // out_refund_no -> RefundRec
	bTransfers = "transfers"    // transfer code -> TransferRec
	bPurged    = "purged"       // event -> purge time
	bMoving    = "transferring" // ticket id -> nil: transfer accepted, not yet re-issued
	bPending   = "pending"      // order no -> nil: paid, tickets not yet issued
)

// Buckets lists every bucket of the sales store, for copying a store to
// another backend (kv.Copy).
var Buckets = []string{bStock, bQuota, bOrders, bHolds, bUserOrds, bTickets, bOwned, bUserCount, bIDCount,
	bSessions, bPayments, bRefunds, bTransfers, bPurged, bMoving, bPending}

// Order states.
const (
	OrderHeld        = "held"          // stock held, waiting for payment
	OrderPaid        = "paid"          // paid; tickets issued when Issued is set
	OrderExpired     = "expired"       // hold ran out unpaid; stock returned
	OrderPaidNoStock = "paid_no_stock" // paid after its hold expired and the stock was gone: refunded in full
)

// Ticket states.
const (
	TicketValid        = "valid"
	TicketTransferring = "transferring"     // a transfer is re-issuing it
	TicketRevoking     = "refund_revoking"  // refund asked; revocation not yet confirmed
	TicketRefundAsked  = "refund_requested" // revoked; the WeChat Pay refund call is due
	TicketRefunding    = "refund_processing"
	TicketRefunded     = "refunded"
)

// Order is a purchase of Qty tickets of one tier.
type Order struct {
	No        string    `json:"no"`
	OpenID    string    `json:"openid"`
	Event     string    `json:"event"`
	Type      string    `json:"type"`
	Tier      string    `json:"tier"`
	Qty       int       `json:"qty"`
	Price     int64     `json:"price"`
	Total     int64     `json:"total"`
	State     string    `json:"state"`
	Created   time.Time `json:"created"`
	HoldUntil time.Time `json:"hold_until"`
	Prepaid   bool      `json:"prepaid,omitempty"`
	// Holders are the real-name holders, index for index with the tickets.
	Holders   []HolderRec `json:"holders,omitempty"`
	DeviceKey []byte      `json:"device_key,omitempty"`

	TransactionID string    `json:"transaction_id,omitempty"`
	PaidAt        time.Time `json:"paid_at,omitzero"`
	Issued        bool      `json:"issued,omitempty"`
	Tickets       []string  `json:"tickets,omitempty"`
	IssueError    string    `json:"issue_error,omitempty"`
}

// HolderRec is a holder as stored: the keyed hash of the id number and
// the sealed name and id. Purging clears both.
type HolderRec struct {
	IDHash []byte `json:"id_hash,omitempty"`
	Sealed []byte `json:"sealed,omitempty"`
}

// TicketRec is the sales side of an issued ticket.
type TicketRec struct {
	ID     string `json:"id"`
	Order  string `json:"order"`
	Index  int    `json:"index"`
	Event  string `json:"event"`
	Type   string `json:"type"`
	Tier   string `json:"tier"`
	Price  int64  `json:"price"`
	Buyer  string `json:"buyer"`
	Owner  string `json:"owner"`
	Serial uint16 `json:"serial"`
	Code   string `json:"code,omitempty"`
	// Credential is the signed credential a rotating ticket's phone signs
	// codes with (docs/token.md §3).
	Credential []byte    `json:"credential,omitempty"`
	State      string    `json:"state"`
	Holder     HolderRec `json:"holder"`
	Device     []byte    `json:"device_key,omitempty"`
	Transfer   string    `json:"transfer,omitempty"` // open transfer code
	// Pending is an accepted transfer waiting for its re-issue.
	Pending  *PendingTransfer `json:"pending,omitempty"`
	RefundNo string           `json:"refund_no,omitempty"`
	Updated  time.Time        `json:"updated"`
}

// PendingTransfer is where an accepted transfer is going.
type PendingTransfer struct {
	To       string    `json:"to"`
	RealName bool      `json:"real_name,omitempty"`
	Holder   HolderRec `json:"holder"`
	Device   []byte    `json:"device_key,omitempty"`
}

// RefundRec tracks one refund at WeChat Pay.
type RefundRec struct {
	No       string    `json:"no"`
	Ticket   string    `json:"ticket,omitempty"`
	Order    string    `json:"order"`
	Amount   int64     `json:"amount"`
	Total    int64     `json:"total"`
	Status   string    `json:"status"` // "" until WeChat Pay answered, then its status
	RefundID string    `json:"refund_id,omitempty"`
	Created  time.Time `json:"created"`
}

// TransferRec is an open offer to hand a ticket to whoever accepts it.
type TransferRec struct {
	Code    string    `json:"code"`
	Ticket  string    `json:"ticket"`
	From    string    `json:"from"`
	Expires time.Time `json:"expires"`
}

// Session is a signed-in buyer.
type Session struct {
	OpenID  string    `json:"openid"`
	Expires time.Time `json:"expires"`
}

// Store is the sales books in a kv store: bbolt on one machine
// (OpenStore), PostgreSQL when the centre must outlive one (NewStore with
// a kv/pgkv DB). Its methods are safe for concurrent use; every decision
// that must not be made twice (stock, limits, a payment, a refund) is made
// inside one transaction, and every transaction function may run more
// than once (kv's contract), so each starts from what it reads.
type Store struct {
	db kv.DB
}

// OpenStore opens or creates the sales books in the bbolt file at path.
func OpenStore(path string) (*Store, error) {
	db, err := boltkv.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open sales store: %w", err)
	}
	return &Store{db: db}, nil
}

// NewStore keeps the sales books in db, which the Store then owns (Close
// closes it).
func NewStore(db kv.DB) *Store { return &Store{db: db} }

// defaultShards is the stock shards of a tier unless configured: one on
// bbolt, which commits one writer at a time, eight elsewhere (stock.go).
func (s *Store) defaultShards() int {
	if _, ok := s.db.(*boltkv.DB); ok {
		return 1
	}
	return 8
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// DB returns the kv store the books are in.
func (s *Store) DB() kv.DB { return s.db }

// bg is the context of store calls made on behalf of work that must not
// be abandoned half way by a caller going away (a buyer's connection
// closing while a payment is recorded): the transaction finishes or rolls
// back on its own terms.
var bg = context.Background()

// Remaining returns the unsold stock of a tier.
func (s *Store) Remaining(event, typ, tier string) (int, error) {
	var n uint64
	err := s.db.View(bg, func(tx kv.Tx) (err error) { n, err = totalStock(tx, key(event, typ, tier)); return err })
	return int(n), err
}

// Order returns an order.
func (s *Store) Order(no string) (*Order, error) {
	var o *Order
	err := s.db.View(bg, func(tx kv.Tx) (err error) { o, err = getOrder(tx, no); return err })
	return o, err
}

// Ticket returns a ticket.
func (s *Store) Ticket(id string) (*TicketRec, error) {
	var t *TicketRec
	err := s.db.View(bg, func(tx kv.Tx) (err error) { t, err = getTicket(tx, id); return err })
	return t, err
}

// Refund returns a refund record.
func (s *Store) Refund(no string) (*RefundRec, error) {
	var r *RefundRec
	err := s.db.View(bg, func(tx kv.Tx) (err error) { r, err = getRefund(tx, no); return err })
	return r, err
}

// Counts sums orders by state and tickets by state, for checks and the
// benchmark.
func (s *Store) Counts() (orders, tickets map[string]int, err error) {
	err = s.db.View(bg, func(tx kv.Tx) error {
		orders, tickets = map[string]int{}, map[string]int{}
		if err := tx.Scan(bOrders, nil, nil, func(_, v []byte) error {
			var o Order
			if err := json.Unmarshal(v, &o); err != nil {
				return err
			}
			orders[o.State] += o.Qty
			return nil
		}); err != nil {
			return err
		}
		return tx.Scan(bTickets, nil, nil, func(_, v []byte) error {
			var t TicketRec
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			tickets[t.State]++
			return nil
		})
	})
	return orders, tickets, err
}

var errNotFound = errors.New("not found")

func key(parts ...string) []byte {
	var b []byte
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}

// lookU64 reads a counter and says whether it was there.
func lookU64(tx kv.Tx, bucket string, k []byte) (uint64, bool, error) {
	v, err := tx.Get(bucket, k)
	if err != nil || len(v) != 8 {
		return 0, false, err
	}
	return counter(v), true, nil
}

// getU64 reads a counter; a missing one is 0.
func getU64(tx kv.Tx, bucket string, k []byte) (uint64, error) {
	v, _, err := lookU64(tx, bucket, k)
	return v, err
}

func putU64(tx kv.Tx, bucket string, k []byte, v uint64) error {
	return tx.Put(bucket, k, binary.BigEndian.AppendUint64(nil, v))
}

// addU64 adds d to a counter, flooring at zero, and deletes it at zero.
func addU64(tx kv.Tx, bucket string, k []byte, d int) error {
	v, err := getU64(tx, bucket, k)
	if err != nil {
		return err
	}
	n := int64(v) + int64(d)
	if n <= 0 {
		return tx.Delete(bucket, k)
	}
	return putU64(tx, bucket, k, uint64(n))
}

func putJSON(tx kv.Tx, bucket string, k []byte, v any) error {
	j, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Put(bucket, k, j)
}

// getJSON decodes the value of k into v; errNotFound when there is none.
func getJSON(tx kv.Tx, bucket string, k []byte, v any) error {
	b, err := tx.Get(bucket, k)
	if err != nil {
		return err
	}
	if b == nil {
		return errNotFound
	}
	return json.Unmarshal(b, v)
}

// has reports whether bucket holds k.
func has(tx kv.Tx, bucket string, k []byte) (bool, error) {
	v, err := tx.Get(bucket, k)
	return v != nil, err
}

func getOrder(tx kv.Tx, no string) (*Order, error) {
	var o Order
	if err := getJSON(tx, bOrders, []byte(no), &o); err != nil {
		return nil, err
	}
	return &o, nil
}

func putOrder(tx kv.Tx, o *Order) error { return putJSON(tx, bOrders, []byte(o.No), o) }

func getTicket(tx kv.Tx, id string) (*TicketRec, error) {
	var t TicketRec
	if err := getJSON(tx, bTickets, []byte(id), &t); err != nil {
		return nil, err
	}
	return &t, nil
}

func putTicket(tx kv.Tx, t *TicketRec) error { return putJSON(tx, bTickets, []byte(t.ID), t) }

func getRefund(tx kv.Tx, no string) (*RefundRec, error) {
	var r RefundRec
	if err := getJSON(tx, bRefunds, []byte(no), &r); err != nil {
		return nil, err
	}
	return &r, nil
}

func holdKey(until time.Time, no string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(until.UnixNano())), no...)
}
