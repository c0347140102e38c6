package sales

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gated-dev/gated/centre/wxpay"
	"github.com/gated-dev/gated/kv"
)

// Sentinel refusals of a payment; the notification is answered with an
// error, so WeChat Pay retries it while someone looks.
var (
	errMerchantMismatch = errors.New("payment for another merchant or app")
	errAmountMismatch   = errors.New("payment amount differs from the order total")
	errUnknownOrder     = errors.New("payment for an order we do not have")
)

func (s *Server) paymentNotify(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	t, err := s.pay.ParsePaymentNotify(r)
	if err != nil {
		s.log.Warn("payment notification refused", "addr", clientAddr(r), "err", err)
		notifyAnswer(w, http.StatusUnauthorized, err)
		return
	}
	switch err := s.settlePayment(r.Context(), t, "notify"); {
	case errors.Is(err, errMerchantMismatch), errors.Is(err, errAmountMismatch):
		notifyAnswer(w, http.StatusBadRequest, err)
	case errors.Is(err, errUnknownOrder):
		notifyAnswer(w, http.StatusNotFound, err)
	case err != nil:
		notifyAnswer(w, http.StatusInternalServerError, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// notifyAnswer is the failure answer WeChat Pay documents; it retries.
func notifyAnswer(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"code": "FAIL", "message": err.Error()})
}

// settlePayment records a successful payment once and issues the tickets.
// Whether this payment is new is decided in the same transaction that
// records it, so the same notification twice, or twice at once, or a
// notification racing a query, issues once.
func (s *Server) settlePayment(ctx context.Context, t *wxpay.Transaction, source string) error {
	if t.TradeState != wxpay.TradeSuccess {
		s.log.Info("payment not successful", "order", t.OutTradeNo, "state", t.TradeState, "source", source)
		return nil
	}
	var issue bool
	var o *Order
	var outcome string // what the transaction decided, logged once it committed
	err := s.st.db.Update(bg, func(tx kv.Tx) (err error) {
		issue, outcome = false, ""
		o, err = getOrder(tx, t.OutTradeNo)
		if errors.Is(err, errNotFound) {
			return errUnknownOrder
		}
		if err != nil {
			return err
		}
		if t.MchID != s.cfg.MchID || t.AppID != s.cfg.AppID {
			return errMerchantMismatch
		}
		if t.Total != o.Total {
			return errAmountMismatch
		}
		if seen, err := has(tx, bPayments, []byte(t.TransactionID)); err != nil || seen {
			issue = o.State == OrderPaid && !o.Issued
			return err // seen: the same payment again
		}
		now := s.cfg.Now().UTC()
		switch o.State {
		case OrderHeld:
			o.State = OrderPaid
			if err := tx.Delete(bHolds, holdKey(o.HoldUntil, o.No)); err != nil {
				return err
			}
		case OrderExpired:
			ok, err := s.retake(tx, o)
			if err != nil {
				return err
			}
			if ok {
				o.State, outcome = OrderPaid, "late payment took its stock back"
			} else {
				o.State, outcome = OrderPaidNoStock, "late payment, stock gone: refunding in full"
				rf := &RefundRec{No: "R" + o.No + "-ALL", Order: o.No, Amount: o.Total, Total: o.Total, Created: now}
				if err := putJSON(tx, bRefunds, []byte(rf.No), rf); err != nil {
					return err
				}
			}
		default:
			// WeChat Pay takes one payment per out_trade_no; a second
			// transaction id means something is badly wrong: keep it for a
			// person to refund by hand.
			outcome = "second payment for an order"
			return tx.Put(bPayments, []byte(t.TransactionID), []byte(o.No))
		}
		o.TransactionID, o.PaidAt = t.TransactionID, now
		if err := tx.Put(bPayments, []byte(t.TransactionID), []byte(o.No)); err != nil {
			return err
		}
		if o.State == OrderPaid {
			issue = true
			if err := tx.Put(bPending, []byte(o.No), nil); err != nil {
				return err
			}
		}
		if outcome == "" {
			outcome = "payment recorded"
		}
		return putOrder(tx, o)
	})
	switch {
	case errors.Is(err, errUnknownOrder):
		s.log.Error("payment for unknown order", "order", t.OutTradeNo, "transaction", t.TransactionID, "source", source)
	case errors.Is(err, errMerchantMismatch):
		s.log.Error("payment merchant mismatch", "order", t.OutTradeNo, "transaction", t.TransactionID,
			"mchid", t.MchID, "appid", t.AppID, "source", source)
	case errors.Is(err, errAmountMismatch):
		s.log.Error("payment amount mismatch", "order", t.OutTradeNo, "transaction", t.TransactionID,
			"paid", t.Total, "total", o.Total, "source", source)
	case err != nil:
	case outcome == "payment recorded":
		s.log.Info(outcome, "order", o.No, "transaction", t.TransactionID, "total", t.Total, "source", source)
	case outcome == "late payment took its stock back":
		s.log.Warn(outcome, "order", o.No, "transaction", t.TransactionID, "source", source)
	case outcome != "":
		s.log.Error(outcome, "order", o.No, "transaction", t.TransactionID, "first", o.TransactionID, "source", source)
	}
	if err != nil || !issue {
		return err
	}
	if err := s.issueOrder(ctx, t.OutTradeNo); err != nil {
		// The payment is recorded and the order pending: reconciliation
		// issues it later. WeChat Pay need not retry.
		s.log.Error("issue tickets", "order", t.OutTradeNo, "err", err)
	}
	return nil
}

// issueOrder issues the tickets of a paid order once.
func (s *Server) issueOrder(ctx context.Context, no string) error {
	unlock := s.orderLocks.lock(no)
	defer unlock()
	o, err := s.st.Order(no)
	if err != nil {
		return err
	}
	if o.State != OrderPaid || o.Issued {
		return nil
	}
	ev := s.cfg.event(o.Event)
	if ev == nil {
		return fmt.Errorf("order %s: event %q is no longer configured", no, o.Event)
	}
	tt, _ := ev.tier(o.Type, o.Tier)
	// Valid at the gates from the freeze on: from then the ticket can no
	// longer be refunded or transferred, so a gate never races a change.
	req := IssueRequest{Event: ev.ID, Count: o.Qty, NotBefore: ev.DoorsOpen.Add(-time.Duration(s.cfg.FreezeBefore)),
		NotAfter: ev.Ends, DeviceKey: o.DeviceKey, Key: "order:" + o.No}
	if tt != nil {
		req.Zone, req.Reentry = tt.Zone, tt.Reentry
	}
	if len(o.Holders) == o.Qty {
		for i, h := range o.Holders {
			req.Holders = append(req.Holders, s.gateHolder(h, orderBind(o.No, i)))
		}
	}
	its, err := s.iss.Issue(ctx, req)
	if err == nil && len(its) != o.Qty {
		err = fmt.Errorf("issuer returned %d tickets for %d", len(its), o.Qty)
	}
	if err != nil {
		issueErr := err
		if err := s.st.db.Update(bg, func(tx kv.Tx) error {
			cur, err := getOrder(tx, no)
			if err != nil {
				return err
			}
			cur.IssueError = issueErr.Error()
			return putOrder(tx, cur)
		}); err != nil {
			s.log.Error("record issue error", "order", no, "err", err)
		}
		return issueErr
	}
	now := s.cfg.Now().UTC()
	err = s.st.db.Update(bg, func(tx kv.Tx) error {
		cur, err := getOrder(tx, no)
		if err != nil {
			return err
		}
		cur.Issued, cur.IssueError, cur.Tickets = true, "", nil
		for i, it := range its {
			t := &TicketRec{ID: it.ID, Order: no, Index: i, Event: o.Event, Type: o.Type, Tier: o.Tier, Price: o.Price,
				Buyer: o.OpenID, Owner: o.OpenID, Serial: it.Serial, Code: it.Code, Credential: rotatingCredential(it), State: TicketValid, Device: o.DeviceKey, Updated: now}
			if i < len(cur.Holders) {
				if t.Holder, err = s.rebind(cur.Holders[i], orderBind(no, i), ticketBind(it.ID)); err != nil {
					return err
				}
			}
			if err := putTicket(tx, t); err != nil {
				return err
			}
			if err := tx.Put(bOwned, key(t.Owner, t.ID), nil); err != nil {
				return err
			}
			cur.Tickets = append(cur.Tickets, it.ID)
		}
		if err := tx.Delete(bPending, []byte(no)); err != nil {
			return err
		}
		return putOrder(tx, cur)
	})
	if err != nil {
		// Tickets exist at the centre that we could not record: withdraw
		// them, so the retry's tickets are the only live ones.
		for _, it := range its {
			if rerr := s.iss.Revoke(ctx, it.ID, "issue not recorded"); rerr != nil {
				s.log.Error("revoke unrecorded ticket", "ticket", it.ID, "order", no, "err", rerr)
			}
		}
		return fmt.Errorf("record tickets of %s: %w", no, err)
	}
	s.log.Info("tickets issued", "order", no, "count", len(its))
	return nil
}

// rebind moves a sealed holder from one record to another.
func (s *Server) rebind(h HolderRec, from, to []byte) (HolderRec, error) {
	if s.vault == nil || len(h.Sealed) == 0 {
		return h, nil
	}
	clear, err := s.vault.Open(h.Sealed, from)
	if err != nil {
		return h, err
	}
	sealed, err := s.vault.Seal(clear, to)
	return HolderRec{IDHash: h.IDHash, Sealed: sealed}, err
}

// Reconcile queries WeChat Pay about prepaid orders whose notification is
// overdue, issues paid orders whose issue was interrupted, finishes
// accepted transfers, and resumes refunds that have not reached WeChat Pay.
func (s *Server) Reconcile(ctx context.Context) error {
	now := s.cfg.Now()
	var held, pending, refunds, moving []string
	err := s.st.db.View(ctx, func(tx kv.Tx) error {
		held, pending, refunds, moving = nil, nil, nil, nil
		if err := tx.Scan(bHolds, nil, nil, func(k, _ []byte) error {
			if len(k) > 8 {
				held = append(held, string(k[8:]))
			}
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Scan(bPending, nil, nil, func(k, _ []byte) error { pending = append(pending, string(k)); return nil }); err != nil {
			return err
		}
		if err := tx.Scan(bMoving, nil, nil, func(k, _ []byte) error { moving = append(moving, string(k)); return nil }); err != nil {
			return err
		}
		return tx.Scan(bRefunds, nil, nil, func(k, v []byte) error {
			var rf RefundRec
			if err := json.Unmarshal(v, &rf); err != nil {
				return err
			}
			if rf.Status == "" {
				refunds = append(refunds, rf.No)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	var errs []error
	// held is in hold order, so the oldest orders are asked about first.
	queries, deferred := 0, 0
	for _, no := range held {
		o, err := s.st.Order(no)
		if err != nil || o.State != OrderHeld || !o.Prepaid || now.Sub(o.Created) < time.Duration(s.cfg.ReconcileAfter) {
			continue
		}
		if queries == s.cfg.ReconcileMaxQueries {
			deferred++
			continue
		}
		queries++
		t, err := s.pay.QueryOrder(ctx, no)
		if errors.Is(err, wxpay.ErrOrderNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if t.TradeState == wxpay.TradeSuccess {
			if err := s.settlePayment(ctx, t, "reconcile"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if deferred > 0 {
		s.log.Info("reconcile: orders left for the next round", "queried", queries, "deferred", deferred)
	}
	for _, no := range pending {
		if err := s.issueOrder(ctx, no); err != nil {
			errs = append(errs, fmt.Errorf("issue %s: %w", no, err))
		}
	}
	for _, id := range moving {
		if _, err := s.finishTransfer(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("transfer %s: %w", id, err))
		}
	}
	for _, no := range refunds {
		if err := s.driveRefund(ctx, no); err != nil {
			errs = append(errs, fmt.Errorf("refund %s: %w", no, err))
		}
	}
	return errors.Join(errs...)
}
