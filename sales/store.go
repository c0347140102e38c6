package sales

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Buckets of sales.db. Keys that combine parts separate them with 0x00,
// which no id contains.
var (
	bStock     = []byte("stock")        // event\0type\0tier -> remaining (uint64)
	bQuota     = []byte("quota")        // event\0type\0tier -> configured quota (uint64)
	bOrders    = []byte("orders")       // order no -> Order
	bHolds     = []byte("holds")        // hold-until (unix nanos, 8 bytes) || order no -> nil
	bUserOrds  = []byte("userorders")   // openid\0no -> nil
	bTickets   = []byte("tickets")      // ticket id -> TicketRec
	bOwned     = []byte("owned")        // openid\0ticket id -> nil
	bUserCount = []byte("usercount")    // event\0openid -> tickets bought (uint64)
	bIDCount   = []byte("idcount")      // event\0id hmac -> tickets held (uint64)
	bSessions  = []byte("sessions")     // sha256(token) -> Session
	bPayments  = []byte("payments")     // transaction_id -> order no
	bRefunds   = []byte("refunds")      // out_refund_no -> RefundRec
	bTransfers = []byte("transfers")    // transfer code -> TransferRec
	bPurged    = []byte("purged")       // event -> purge time
	bMoving    = []byte("transferring") // ticket id -> nil: transfer accepted, not yet re-issued
	bPending   = []byte("pending")      // order no -> nil: paid, tickets not yet issued
)

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

// Store is the sales database, one bbolt file. Its methods are safe for
// concurrent use; every decision that must not be made twice (stock,
// limits, a payment, a refund) is made inside one transaction.
type Store struct {
	db *bolt.DB
}

// OpenStore opens or creates the sales database at path.
func OpenStore(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open sales store %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bStock, bQuota, bOrders, bHolds, bUserOrds, bTickets, bOwned, bUserCount, bIDCount,
			bSessions, bPayments, bRefunds, bTransfers, bPurged, bPending, bMoving} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// syncStock sets up stock for every tier; a quota changed in the config
// moves the remaining stock by the difference, never below zero.
func (s *Store) syncStock(events []Event) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, ev := range events {
			for _, tt := range ev.Types {
				for _, tr := range tt.Tiers {
					k := key(ev.ID, tt.ID, tr.ID)
					old, had := getU64(tx.Bucket(bQuota), k)
					rem, _ := getU64(tx.Bucket(bStock), k)
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
					if err := putU64(tx.Bucket(bQuota), k, q); err != nil {
						return err
					}
					if err := putU64(tx.Bucket(bStock), k, rem); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
}

// Remaining returns the unsold stock of a tier.
func (s *Store) Remaining(event, typ, tier string) (int, error) {
	var n uint64
	err := s.db.View(func(tx *bolt.Tx) error { n, _ = getU64(tx.Bucket(bStock), key(event, typ, tier)); return nil })
	return int(n), err
}

// Order returns an order.
func (s *Store) Order(no string) (*Order, error) {
	var o *Order
	err := s.db.View(func(tx *bolt.Tx) (err error) { o, err = getOrder(tx, no); return err })
	return o, err
}

// Ticket returns a ticket.
func (s *Store) Ticket(id string) (*TicketRec, error) {
	var t *TicketRec
	err := s.db.View(func(tx *bolt.Tx) (err error) { t, err = getTicket(tx, id); return err })
	return t, err
}

// Refund returns a refund record.
func (s *Store) Refund(no string) (*RefundRec, error) {
	var r *RefundRec
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bRefunds).Get([]byte(no))
		if v == nil {
			return errNotFound
		}
		r = new(RefundRec)
		return json.Unmarshal(v, r)
	})
	return r, err
}

// Counts sums orders by state and tickets by state, for checks and the
// benchmark.
func (s *Store) Counts() (orders, tickets map[string]int, err error) {
	orders, tickets = map[string]int{}, map[string]int{}
	err = s.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bOrders).ForEach(func(_, v []byte) error {
			var o Order
			if err := json.Unmarshal(v, &o); err != nil {
				return err
			}
			orders[o.State] += o.Qty
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bTickets).ForEach(func(_, v []byte) error {
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

func getU64(b *bolt.Bucket, k []byte) (uint64, bool) {
	v := b.Get(k)
	if len(v) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(v), true
}

func putU64(b *bolt.Bucket, k []byte, v uint64) error {
	return b.Put(k, binary.BigEndian.AppendUint64(nil, v))
}

// addU64 adds d to a counter, flooring at zero, and deletes it at zero.
func addU64(b *bolt.Bucket, k []byte, d int) error {
	v, _ := getU64(b, k)
	n := int64(v) + int64(d)
	if n <= 0 {
		return b.Delete(k)
	}
	return putU64(b, k, uint64(n))
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	j, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, j)
}

func getOrder(tx *bolt.Tx, no string) (*Order, error) {
	v := tx.Bucket(bOrders).Get([]byte(no))
	if v == nil {
		return nil, errNotFound
	}
	var o Order
	return &o, json.Unmarshal(v, &o)
}

func putOrder(tx *bolt.Tx, o *Order) error { return putJSON(tx.Bucket(bOrders), []byte(o.No), o) }

func getTicket(tx *bolt.Tx, id string) (*TicketRec, error) {
	v := tx.Bucket(bTickets).Get([]byte(id))
	if v == nil {
		return nil, errNotFound
	}
	var t TicketRec
	return &t, json.Unmarshal(v, &t)
}

func putTicket(tx *bolt.Tx, t *TicketRec) error { return putJSON(tx.Bucket(bTickets), []byte(t.ID), t) }

func holdKey(until time.Time, no string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(until.UnixNano())), no...)
}
