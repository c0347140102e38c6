package sales

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gated-dev/gated/centre/realname"
	"github.com/gated-dev/gated/centre/wxpay"
	"github.com/gated-dev/gated/kv"
)

// OrderRequest is the body of POST /api/v1/orders.
type OrderRequest struct {
	Event    string `json:"event"`
	Type     string `json:"type"`
	Tier     string `json:"tier"`
	Quantity int    `json:"quantity"`
	// Holders, one per ticket, for real-name events.
	Holders []realname.Holder `json:"holders,omitempty"`
	// DeviceKey is the phone's Ed25519 public key (base64) for rotating
	// tickets.
	DeviceKey string `json:"device_key,omitempty"`
}

// OrderView is an order as its buyer sees it.
type OrderView struct {
	No        string            `json:"no"`
	Event     string            `json:"event"`
	Type      string            `json:"type"`
	Tier      string            `json:"tier"`
	Quantity  int               `json:"quantity"`
	Price     int64             `json:"price_fen"`
	Total     int64             `json:"total_fen"`
	State     string            `json:"state"`
	HoldUntil time.Time         `json:"hold_until"`
	Holders   []realname.Masked `json:"holders,omitempty"`
	Tickets   []TicketView      `json:"tickets,omitempty"`
}

// TicketView is a ticket as its holder sees it.
type TicketView struct {
	ID     string `json:"id"`
	Event  string `json:"event"`
	Type   string `json:"type"`
	Tier   string `json:"tier"`
	Serial uint16 `json:"serial"`
	State  string `json:"state"`
	Code   string `json:"code,omitempty"`
	// Credential (base64) is set for rotating tickets: the mini program
	// signs a fresh code with it and its device key every 15 s.
	Credential []byte           `json:"credential,omitempty"`
	Holder     *realname.Masked `json:"holder,omitempty"`
}

func orderBind(no string, i int) []byte { return []byte("order:" + no + ":" + strconv.Itoa(i)) }
func ticketBind(id string) []byte       { return []byte("ticket:" + id) }

func (s *Server) masked(h HolderRec, bind []byte) *realname.Masked {
	if s.vault == nil || len(h.Sealed) == 0 {
		return nil
	}
	clear, err := s.vault.Open(h.Sealed, bind)
	if err != nil {
		s.log.Error("real-name record does not open", "err", err)
		return nil
	}
	m := clear.Mask()
	return &m
}

func (s *Server) orderView(tx kv.Tx, o *Order) (OrderView, error) {
	v := OrderView{No: o.No, Event: o.Event, Type: o.Type, Tier: o.Tier, Quantity: o.Qty, Price: o.Price,
		Total: o.Total, State: o.State, HoldUntil: o.HoldUntil}
	for i, h := range o.Holders {
		if m := s.masked(h, orderBind(o.No, i)); m != nil {
			v.Holders = append(v.Holders, *m)
		}
	}
	for _, id := range o.Tickets {
		t, err := getTicket(tx, id)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return v, err
		}
		if t.Owner == o.OpenID {
			v.Tickets = append(v.Tickets, s.ticketView(t))
		}
	}
	return v, nil
}

// viewOrder reads an order's view in a transaction of its own.
func (s *Server) viewOrder(ctx context.Context, o *Order) (v OrderView, err error) {
	err = s.st.db.View(ctx, func(tx kv.Tx) error { v, err = s.orderView(tx, o); return err })
	return v, err
}

// gateHolder is the masked holder as gate staff see it, or "".
func (s *Server) gateHolder(h HolderRec, bind []byte) string {
	if m := s.masked(h, bind); m != nil {
		return m.Name + " " + m.ID
	}
	return ""
}

func (s *Server) ticketView(t *TicketRec) TicketView {
	v := TicketView{ID: t.ID, Event: t.Event, Type: t.Type, Tier: t.Tier, Serial: t.Serial, State: t.State,
		Holder: s.masked(t.Holder, ticketBind(t.ID))}
	if t.State == TicketValid || t.State == TicketTransferring {
		v.Code, v.Credential = t.Code, t.Credential
	}
	return v
}

func newOrderNo(now time.Time) string {
	b := make([]byte, 5)
	rand.Read(b)
	// out_trade_no: 6-32 characters of [A-Za-z0-9_-|*]; time first so
	// numbers sort roughly by creation in the merchant platform.
	return "G" + now.UTC().Format("060102150405") + strings.ToUpper(hex.EncodeToString(b))
}

func (s *Server) createOrder(w http.ResponseWriter, r *http.Request) error {
	var req OrderRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	now := s.cfg.Now()
	ev := s.cfg.event(req.Event)
	if ev == nil {
		return problem(http.StatusNotFound, "unknown_event", "There is no event %q on sale.", req.Event)
	}
	tt, tr := ev.tier(req.Type, req.Tier)
	if tr == nil {
		return problem(http.StatusNotFound, "unknown_tier", "Event %q has no ticket type %q with price tier %q.", ev.ID, req.Type, req.Tier)
	}
	switch {
	case !now.Before(ev.Ends):
		return problem(http.StatusConflict, "sales_closed", "%s is over; its tickets are no longer sold.", ev.Name)
	case !tr.OnSale.IsZero() && now.Before(tr.OnSale):
		return problem(http.StatusConflict, "not_on_sale", "%s goes on sale at %s.", tr.Name, tr.OnSale.Format(time.RFC3339))
	case !tr.OffSale.IsZero() && !now.Before(tr.OffSale):
		return problem(http.StatusConflict, "sale_ended", "%s is no longer on sale.", tr.Name)
	case req.Quantity < 1 || req.Quantity > s.cfg.MaxPerOrder:
		return problem(http.StatusBadRequest, "bad_quantity", "Order between 1 and %d tickets at a time.", s.cfg.MaxPerOrder)
	}
	o := &Order{OpenID: user(r), Event: ev.ID, Type: tt.ID, Tier: tr.ID, Qty: req.Quantity, Price: tr.Price,
		Total: tr.Price * int64(req.Quantity), State: OrderHeld, Created: now.UTC(),
		HoldUntil: now.Add(time.Duration(s.cfg.HoldFor)).UTC().Truncate(time.Second)}
	if ev.Rotating {
		k, err := base64.StdEncoding.DecodeString(req.DeviceKey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return problem(http.StatusBadRequest, "device_key_required", "This event uses rotating codes: send your phone's Ed25519 public key (32 bytes, base64) as device_key.")
		}
		o.DeviceKey = k
	}
	var hashes [][]byte
	var clear []realname.Holder
	if ev.RealName {
		if len(req.Holders) != req.Quantity {
			return problem(http.StatusBadRequest, "holders_required", "This event is real-name: give one holder (name and id number) per ticket, %d in all.", req.Quantity)
		}
		for i, h := range req.Holders {
			n, err := realname.Normalise(h)
			if errors.Is(err, realname.ErrBadName) {
				return problem(http.StatusBadRequest, "bad_name", "Holder %d: the name must be 1 to 30 characters.", i+1)
			}
			if err != nil {
				return problem(http.StatusBadRequest, "bad_id_number", "Holder %d: %s is not a valid 18-character resident identity card number.", i+1, realname.MaskID(strings.TrimSpace(h.ID)))
			}
			for j, c := range clear {
				if c.ID == n.ID && s.cfg.MaxPerID == 1 {
					return problem(http.StatusConflict, "id_limit", "Holders %d and %d have the same id number: one id number, one ticket per show.", j+1, i+1)
				}
			}
			clear = append(clear, n)
			hashes = append(hashes, s.vault.IDHash(n.ID))
		}
	} else if len(req.Holders) > 0 {
		return problem(http.StatusBadRequest, "no_holders", "This event is not real-name; send no holders.")
	}

	// A read first turns the crowd away once a tier is sold out without
	// queueing it behind writes; the decision itself is the Batch below.
	rem, err := s.st.Remaining(ev.ID, tt.ID, tr.ID)
	if err != nil {
		return err
	}
	if rem == 0 {
		return problem(http.StatusConflict, "sold_out", "%s %s is sold out.", tt.Name, tr.Name)
	}
	var refusal *Problem
	sk := key(ev.ID, tt.ID, tr.ID)
	// stockRefusal is the refusal when rem cannot cover the order, or nil.
	stockRefusal := func(rem uint64) *Problem {
		switch {
		case rem >= uint64(o.Qty):
			return nil
		case rem == 0:
			return problem(http.StatusConflict, "sold_out", "%s %s is sold out.", tt.Name, tr.Name)
		default:
			return problem(http.StatusConflict, "not_enough_stock", "Only %d of %s %s are left.", rem, tt.Name, tr.Name)
		}
	}
	shards := s.cfg.StockShards
	full := false // take from every shard in order, not from the buyer's own first
	// Batch lets concurrent buyers share one commit; its function may run
	// more than once, so it starts from scratch each time. The stock,
	// the keys every buyer of the tier writes, is read last: on
	// PostgreSQL reading it locks it until the commit, so the later it is
	// taken, the shorter the queue behind it (and it is split in shards,
	// stock.go). A refusal found before any write is a result, not an
	// error, so it does not roll back the others in a bbolt batch; one
	// found at the stock, after the order's own writes, rolls them back
	// with errRefused.
	order := func(tx kv.Tx) error {
		refusal = nil
		o.No = newOrderNo(now)
		o.Holders = nil
		// refuse settles a limit refusal, unless the tier cannot cover the
		// order anyway, which is the answer that matters more.
		refuse := func(p *Problem) error {
			rem, err := totalStock(tx, sk)
			if err != nil {
				return err
			}
			if refusal = stockRefusal(rem); refusal == nil {
				refusal = p
			}
			return nil
		}
		uk := key(ev.ID, o.OpenID)
		had, err := getU64(tx, bUserCount, uk)
		if err != nil {
			return err
		}
		if int(had)+o.Qty > s.cfg.MaxPerUser {
			return refuse(problem(http.StatusConflict, "user_limit", "Each buyer may hold at most %d tickets for %s; you already hold or are paying for %d.", s.cfg.MaxPerUser, ev.Name, had))
		}
		seen := map[string]int{}
		for i, h := range hashes {
			seen[string(h)]++
			n, err := getU64(tx, bIDCount, key(ev.ID, string(h)))
			if err != nil {
				return err
			}
			if int(n)+seen[string(h)] > s.cfg.MaxPerID {
				return refuse(problem(http.StatusConflict, "id_limit", "Holder %d (id %s) already has a ticket for %s: one id number, %d ticket per show.", i+1, realname.MaskID(clear[i].ID), ev.Name, s.cfg.MaxPerID))
			}
		}
		for i, h := range hashes {
			sealed, err := s.vault.Seal(clear[i], orderBind(o.No, i))
			if err != nil {
				return err
			}
			o.Holders = append(o.Holders, HolderRec{IDHash: h, Sealed: sealed})
			if err := addU64(tx, bIDCount, key(ev.ID, string(h)), 1); err != nil {
				return err
			}
		}
		if err := addU64(tx, bUserCount, uk, o.Qty); err != nil {
			return err
		}
		if err := tx.Put(bHolds, holdKey(o.HoldUntil, o.No), nil); err != nil {
			return err
		}
		if err := tx.Put(bUserOrds, key(o.OpenID, o.No), nil); err != nil {
			return err
		}
		if err := putOrder(tx, o); err != nil {
			return err
		}
		first := ownShard(o.OpenID, shards)
		if full {
			first = 0
		}
		ok, held, err := takeStock(tx, sk, shards, first, o.Qty)
		switch {
		case err != nil:
			return err
		case !ok && first > 0:
			return errTakeAll
		case !ok:
			refusal = stockRefusal(held)
			return errRefused
		}
		return nil
	}
	err = s.st.db.Batch(r.Context(), order)
	if errors.Is(err, errTakeAll) {
		// The buyer's shard and those after it could not cover the order:
		// once more over every shard from the first, so that shards are
		// always taken in ascending order and no two buyers deadlock.
		full = true
		err = s.st.db.Batch(r.Context(), order)
	}
	if errors.Is(err, errRefused) && refusal != nil {
		return refusal
	}
	if err != nil {
		return err
	}
	if refusal != nil {
		return refusal
	}
	v, err := s.viewOrder(r.Context(), o)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// errRefused rolls back an order the stock cannot cover; the refusal is
// the answer.
var errRefused = errors.New("order refused")

// errTakeAll rolls back an order its buyer's stock shards could not cover,
// to try every shard.
var errTakeAll = errors.New("take from every stock shard")

// ownOrder loads an order of the signed-in buyer; others' orders do not
// exist for them.
func (s *Server) ownOrder(r *http.Request) (*Order, error) {
	o, err := s.st.Order(r.PathValue("no"))
	if errors.Is(err, errNotFound) || err == nil && o.OpenID != user(r) {
		return nil, problem(http.StatusNotFound, "unknown_order", "You have no order %q.", r.PathValue("no"))
	}
	return o, err
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) error {
	o, err := s.ownOrder(r)
	if err != nil {
		return err
	}
	v, err := s.viewOrder(r.Context(), o)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *Server) listOrders(w http.ResponseWriter, r *http.Request) error {
	var out []OrderView
	err := s.st.db.View(r.Context(), func(tx kv.Tx) error {
		out = []OrderView{}
		nos, err := userIndex(tx, bUserOrds, user(r))
		if err != nil {
			return err
		}
		for _, no := range nos {
			o, err := getOrder(tx, no)
			if err != nil {
				return err
			}
			v, err := s.orderView(tx, o)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) listTickets(w http.ResponseWriter, r *http.Request) error {
	var out []TicketView
	err := s.st.db.View(r.Context(), func(tx kv.Tx) error {
		out = []TicketView{}
		ids, err := userIndex(tx, bOwned, user(r))
		if err != nil {
			return err
		}
		for _, id := range ids {
			t, err := getTicket(tx, id)
			if err != nil {
				return err
			}
			out = append(out, s.ticketView(t))
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// userIndex returns the ids a buyer's index bucket (openid\0id -> nil:
// bUserOrds, bOwned) lists for openid, in order.
func userIndex(tx kv.Tx, bucket, openid string) ([]string, error) {
	prefix := key(openid, "")
	var ids []string
	err := kv.ScanPrefix(tx, bucket, prefix, func(k, _ []byte) error {
		ids = append(ids, string(k[len(prefix):]))
		return nil
	})
	return ids, err
}

func orderStateProblem(o *Order) *Problem {
	switch o.State {
	case OrderPaid:
		return problem(http.StatusConflict, "already_paid", "Order %s is paid already; your tickets are under My tickets.", o.No)
	case OrderExpired:
		return problem(http.StatusGone, "hold_expired", "Order %s was not paid in time and its tickets went back on sale; please place a new order.", o.No)
	case OrderPaidNoStock:
		return problem(http.StatusConflict, "refunded_no_stock", "Order %s was paid after its hold ran out and the tickets had sold; the payment is being refunded in full.", o.No)
	}
	return nil
}

func (s *Server) payOrder(w http.ResponseWriter, r *http.Request) error {
	o, err := s.ownOrder(r)
	if err != nil {
		return err
	}
	if p := orderStateProblem(o); p != nil {
		return p
	}
	if !s.cfg.Now().Before(o.HoldUntil) {
		return problem(http.StatusGone, "hold_expired", "Order %s was not paid in time and its tickets went back on sale; please place a new order.", o.No)
	}
	// Note the prepay before making it: from now on the hold is not
	// released without asking WeChat Pay whether it was paid.
	if !o.Prepaid {
		err := s.st.db.Update(bg, func(tx kv.Tx) error {
			cur, err := getOrder(tx, o.No)
			if err != nil {
				return err
			}
			if cur.State != OrderHeld {
				return orderStateProblem(cur)
			}
			cur.Prepaid = true
			return putOrder(tx, cur)
		})
		if err != nil {
			return err
		}
	}
	ev := s.cfg.event(o.Event)
	desc := o.Event
	if ev != nil {
		if tt, tr := ev.tier(o.Type, o.Tier); tr != nil {
			desc = fmt.Sprintf("%s %s %s x%d", ev.Name, tt.Name, tr.Name, o.Qty)
		}
	}
	rp, err := s.pay.Prepay(r.Context(), wxpay.PrepayRequest{OutTradeNo: o.No, Description: truncate(desc, 127),
		OpenID: o.OpenID, Total: o.Total, Expire: o.HoldUntil})
	if err != nil {
		s.log.Warn("prepay failed", "order", o.No, "err", err)
		return problem(http.StatusBadGateway, "payment_unavailable", "WeChat Pay did not accept the order just now; your tickets stay held until %s, please try again.", o.HoldUntil.Format(time.RFC3339))
	}
	writeJSON(w, http.StatusOK, rp)
	return nil
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n])
	}
	return s
}

// SweepHolds releases the stock of holds that ran out. An order that went
// to WeChat Pay is asked about first, so a payment is never dropped; if
// WeChat Pay cannot be asked, the hold waits for the next sweep.
func (s *Server) SweepHolds(ctx context.Context) error {
	now := s.cfg.Now()
	var due []string
	// Holds are keyed by their end first, so the due ones are a range:
	// every key below the first nanosecond after now.
	end := binary.BigEndian.AppendUint64(nil, uint64(now.UnixNano())+1)
	err := s.st.db.View(ctx, func(tx kv.Tx) error {
		due = nil
		return tx.Scan(bHolds, nil, end, func(k, _ []byte) error {
			if len(k) > 8 {
				due = append(due, string(k[8:]))
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, no := range due {
		if err := s.settleHold(ctx, no, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Server) settleHold(ctx context.Context, no string, now time.Time) error {
	o, err := s.st.Order(no)
	if err != nil {
		return err
	}
	if o.State == OrderHeld && o.Prepaid {
		t, err := s.pay.QueryOrder(ctx, no)
		switch {
		case errors.Is(err, wxpay.ErrOrderNotExist):
		case err != nil:
			return fmt.Errorf("hold %s: %w", no, err)
		case t.TradeState == wxpay.TradeSuccess:
			return s.settlePayment(ctx, t, "query")
		case t.TradeState == wxpay.TradePaying:
			return nil // the buyer is entering a password: next sweep
		default:
			// time_expire has passed at WeChat Pay too; closing makes sure.
			if err := s.pay.CloseOrder(ctx, no); err != nil {
				s.log.Warn("close order", "order", no, "err", err)
			}
		}
	}
	var expired int
	err = s.st.db.Update(bg, func(tx kv.Tx) error {
		expired = 0
		o, err := getOrder(tx, no)
		if err != nil {
			return err
		}
		if o.State != OrderHeld {
			return tx.Delete(bHolds, holdKey(o.HoldUntil, o.No))
		}
		if now.Before(o.HoldUntil) {
			return nil
		}
		o.State = OrderExpired
		if err := s.release(tx, o, o.Qty, o.Holders); err != nil {
			return err
		}
		expired = o.Qty
		return putOrder(tx, o)
	})
	if err == nil && expired > 0 {
		s.log.Info("hold expired", "order", no, "qty", expired)
	}
	return err
}

// release gives back the buyer's and holders' counts, then the stock
// (last, as everywhere: stock.go).
func (s *Server) release(tx kv.Tx, o *Order, qty int, holders []HolderRec) error {
	if err := tx.Delete(bHolds, holdKey(o.HoldUntil, o.No)); err != nil {
		return err
	}
	if err := addU64(tx, bUserCount, key(o.Event, o.OpenID), -qty); err != nil {
		return err
	}
	for _, h := range holders {
		if len(h.IDHash) > 0 {
			if err := addU64(tx, bIDCount, key(o.Event, string(h.IDHash)), -1); err != nil {
				return err
			}
		}
	}
	return giveStock(tx, key(o.Event, o.Type, o.Tier), s.cfg.StockShards, o.OpenID, qty)
}

// retake takes the stock and counts of an expired order back, for a
// payment that arrived after its hold ran out; false if they are gone.
func (s *Server) retake(tx kv.Tx, o *Order) (bool, error) {
	for _, h := range o.Holders {
		if len(h.IDHash) == 0 {
			continue
		}
		n, err := getU64(tx, bIDCount, key(o.Event, string(h.IDHash)))
		if err != nil || int(n)+1 > s.cfg.MaxPerID {
			return false, err
		}
	}
	if err := addU64(tx, bUserCount, key(o.Event, o.OpenID), o.Qty); err != nil {
		return false, err
	}
	for _, h := range o.Holders {
		if len(h.IDHash) > 0 {
			if err := addU64(tx, bIDCount, key(o.Event, string(h.IDHash)), 1); err != nil {
				return false, err
			}
		}
	}
	// The stock last, from every shard in order: a late payment is rare,
	// and it takes what is anywhere. When the stock is gone, the caller
	// commits a full refund instead, so the counts added above are taken
	// back here.
	ok, _, err := takeStock(tx, key(o.Event, o.Type, o.Tier), s.cfg.StockShards, 0, o.Qty)
	if err != nil || ok {
		return ok, err
	}
	return false, s.uncount(tx, o)
}

// uncount takes back the counts retake added.
func (s *Server) uncount(tx kv.Tx, o *Order) error {
	if err := addU64(tx, bUserCount, key(o.Event, o.OpenID), -o.Qty); err != nil {
		return err
	}
	for _, h := range o.Holders {
		if len(h.IDHash) > 0 {
			if err := addU64(tx, bIDCount, key(o.Event, string(h.IDHash)), -1); err != nil {
				return err
			}
		}
	}
	return nil
}
