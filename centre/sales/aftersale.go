package sales

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
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

// ownTicket loads a ticket the signed-in buyer holds.
func (s *Server) ownTicket(r *http.Request) (*TicketRec, *Event, error) {
	t, err := s.st.Ticket(r.PathValue("id"))
	if errors.Is(err, errNotFound) || err == nil && t.Owner != user(r) {
		return nil, nil, problem(http.StatusNotFound, "unknown_ticket", "You hold no ticket %q.", r.PathValue("id"))
	}
	if err != nil {
		return nil, nil, err
	}
	ev := s.cfg.event(t.Event)
	if ev == nil {
		return nil, nil, problem(http.StatusConflict, "event_closed", "Event %q is no longer on sale here.", t.Event)
	}
	return t, ev, nil
}

// frozen refuses changes too close to the doors opening.
func (s *Server) frozen(ev *Event, what string) error {
	at := ev.DoorsOpen.Add(-time.Duration(s.cfg.FreezeBefore))
	if !s.cfg.Now().Before(at) {
		return problem(http.StatusConflict, "frozen", "%s closed at %s, %s before the doors of %s open.",
			what, at.Format(time.RFC3339), time.Duration(s.cfg.FreezeBefore), ev.Name)
	}
	return nil
}

// RefundView is the answer to a refund request.
type RefundView struct {
	Ticket      TicketView `json:"ticket"`
	OutRefundNo string     `json:"out_refund_no"`
	Amount      int64      `json:"amount_fen"`
	Status      string     `json:"status"`
}

func refundNo(order string, index int) string { return "R" + order + "-" + strconv.Itoa(index) }

func (s *Server) refundTicket(w http.ResponseWriter, r *http.Request) error {
	t, ev, err := s.ownTicket(r)
	if err != nil {
		return err
	}
	if t.Buyer != t.Owner {
		return problem(http.StatusConflict, "not_refundable", "This ticket was transferred to you; only its buyer's payment can be refunded, so pass it on by transfer instead.")
	}
	if t.State != TicketValid && t.RefundNo != "" {
		return s.writeRefund(w, t.ID)
	}
	if t.State != TicketValid {
		return problem(http.StatusConflict, "ticket_busy", "This ticket is being transferred; try again in a moment.")
	}
	if err := s.frozen(ev, "Refunds"); err != nil {
		return err
	}
	no := refundNo(t.Order, t.Index)
	err = s.st.db.Update(bg, func(tx kv.Tx) error {
		cur, err := getTicket(tx, t.ID)
		if err != nil {
			return err
		}
		if cur.State != TicketValid || cur.Owner != user(r) {
			return problem(http.StatusConflict, "ticket_busy", "This ticket changed meanwhile; reload My tickets.")
		}
		o, err := getOrder(tx, cur.Order)
		if err != nil {
			return err
		}
		if cur.Transfer != "" {
			if err := tx.Delete(bTransfers, []byte(cur.Transfer)); err != nil {
				return err
			}
			cur.Transfer = ""
		}
		// The ticket is revoked before the money moves: a refunded ticket
		// must never still open a gate.
		cur.State, cur.RefundNo, cur.Updated = TicketRevoking, no, s.cfg.Now().UTC()
		rf := &RefundRec{No: no, Ticket: cur.ID, Order: cur.Order, Amount: cur.Price, Total: o.Total, Created: cur.Updated}
		if err := putJSON(tx, bRefunds, []byte(no), rf); err != nil {
			return err
		}
		return putTicket(tx, cur)
	})
	if err != nil {
		return err
	}
	if err := s.driveRefund(r.Context(), no); err != nil {
		// Recorded: reconciliation finishes it. The buyer sees the state.
		s.log.Warn("refund not finished", "refund", no, "err", err)
	}
	return s.writeRefund(w, t.ID)
}

func (s *Server) writeRefund(w http.ResponseWriter, id string) error {
	t, err := s.st.Ticket(id)
	if err != nil {
		return err
	}
	rf, err := s.st.Refund(t.RefundNo)
	if err != nil {
		return err
	}
	status := rf.Status
	if status == "" {
		status = "PENDING"
	}
	writeJSON(w, http.StatusAccepted, RefundView{Ticket: s.ticketView(t), OutRefundNo: rf.No, Amount: rf.Amount, Status: status})
	return nil
}

// driveRefund takes a refund as far as it goes: revoke the ticket (through
// the issuer, so the whitelist delta reaches the gates), give its stock
// back, then ask WeChat Pay. Each step is recorded before the next, and
// each is safe to repeat: revoking twice is one revocation, and the same
// out_refund_no twice is one refund.
func (s *Server) driveRefund(ctx context.Context, no string) error {
	unlock := s.orderLocks.lock("refund:" + no)
	defer unlock()
	rf, err := s.st.Refund(no)
	if err != nil || rf.Status != "" {
		return err
	}
	if rf.Ticket != "" {
		t, err := s.st.Ticket(rf.Ticket)
		if err != nil {
			return err
		}
		if t.State == TicketRevoking {
			if err := s.iss.Revoke(ctx, t.ID, "refund "+no); err != nil {
				return fmt.Errorf("revoke %s: %w", t.ID, err)
			}
			err = s.st.db.Update(bg, func(tx kv.Tx) error {
				cur, err := getTicket(tx, t.ID)
				if err != nil || cur.State != TicketRevoking {
					return err
				}
				o, err := getOrder(tx, cur.Order)
				if err != nil {
					return err
				}
				cur.State, cur.Updated = TicketRefundAsked, s.cfg.Now().UTC()
				// The seat goes back on sale; the buyer and holder may buy again.
				owner := *o
				owner.OpenID = cur.Buyer
				if err := s.release(tx, &owner, 1, []HolderRec{cur.Holder}); err != nil {
					return err
				}
				return putTicket(tx, cur)
			})
			if err != nil {
				return err
			}
		}
	}
	res, err := s.pay.Refund(ctx, wxpay.RefundRequest{OutTradeNo: rf.Order, OutRefundNo: no, Reason: "ticket refund",
		Refund: rf.Amount, Total: rf.Total})
	if err != nil {
		return err
	}
	return s.recordRefund(no, res.Status, res.RefundID, 0)
}

// recordRefund stores WeChat Pay's word on a refund; amount, when not 0,
// must match what we asked.
func (s *Server) recordRefund(no, status, refundID string, amount int64) error {
	var asked int64
	changed := false
	err := s.st.db.Update(bg, func(tx kv.Tx) error {
		changed = false
		rf, err := getRefund(tx, no)
		if errors.Is(err, errNotFound) {
			return errUnknownOrder
		}
		if err != nil {
			return err
		}
		if amount != 0 && amount != rf.Amount {
			asked = rf.Amount
			return errAmountMismatch
		}
		if rf.Status == wxpay.RefundSuccess || rf.Status == status {
			return nil // known already
		}
		rf.Status, changed = status, true
		if refundID != "" {
			rf.RefundID = refundID
		}
		if rf.Ticket != "" {
			t, err := getTicket(tx, rf.Ticket)
			if err != nil {
				return err
			}
			switch status {
			case wxpay.RefundSuccess:
				t.State = TicketRefunded
			case wxpay.RefundProcessing:
				t.State = TicketRefunding
			}
			t.Updated = s.cfg.Now().UTC()
			if err := putTicket(tx, t); err != nil {
				return err
			}
		}
		return putJSON(tx, bRefunds, []byte(no), rf)
	})
	switch {
	case errors.Is(err, errAmountMismatch):
		s.log.Error("refund amount mismatch", "refund", no, "refunded", amount, "asked", asked)
	case err != nil || !changed:
	case status == wxpay.RefundAbnormal, status == wxpay.RefundClosed:
		s.log.Error("refund failed at WeChat Pay: handle in the merchant platform", "refund", no, "status", status)
	default:
		s.log.Info("refund", "refund", no, "status", status)
	}
	return err
}

func (s *Server) refundNotify(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	n, err := s.pay.ParseRefundNotify(r)
	if err != nil {
		s.log.Warn("refund notification refused", "addr", clientAddr(r), "err", err)
		notifyAnswer(w, http.StatusUnauthorized, err)
		return
	}
	if n.MchID != s.cfg.MchID {
		s.log.Error("refund notification for another merchant", "mchid", n.MchID, "refund", n.OutRefundNo)
		notifyAnswer(w, http.StatusBadRequest, errMerchantMismatch)
		return
	}
	switch err := s.recordRefund(n.OutRefundNo, n.RefundStatus, n.RefundID, n.Amount.Refund); {
	case errors.Is(err, errUnknownOrder):
		s.log.Error("refund notification for unknown refund", "refund", n.OutRefundNo)
		notifyAnswer(w, http.StatusNotFound, errors.New("unknown out_refund_no"))
	case errors.Is(err, errAmountMismatch):
		notifyAnswer(w, http.StatusBadRequest, err)
	case err != nil:
		notifyAnswer(w, http.StatusInternalServerError, err)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// TransferOffer is the answer to a transfer request: the code the
// recipient accepts.
type TransferOffer struct {
	Code      string    `json:"code"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) offerTransfer(w http.ResponseWriter, r *http.Request) error {
	t, ev, err := s.ownTicket(r)
	if err != nil {
		return err
	}
	if t.State != TicketValid {
		return problem(http.StatusConflict, "not_transferable", "This ticket is %s and cannot be transferred.", strings.ReplaceAll(t.State, "_", " "))
	}
	if err := s.frozen(ev, "Transfers"); err != nil {
		return err
	}
	b := make([]byte, 10)
	rand.Read(b)
	offer := TransferOffer{Code: strings.ToUpper(hex.EncodeToString(b)), ExpiresAt: s.cfg.Now().Add(time.Duration(s.cfg.TransferTTL)).UTC()}
	err = s.st.db.Update(bg, func(tx kv.Tx) error {
		cur, err := getTicket(tx, t.ID)
		if err != nil {
			return err
		}
		if cur.State != TicketValid || cur.Owner != user(r) {
			return problem(http.StatusConflict, "ticket_busy", "This ticket changed meanwhile; reload My tickets.")
		}
		if cur.Transfer != "" { // one open offer: a new one voids the old
			if err := tx.Delete(bTransfers, []byte(cur.Transfer)); err != nil {
				return err
			}
		}
		cur.Transfer = offer.Code
		if err := putJSON(tx, bTransfers, []byte(offer.Code), TransferRec{Code: offer.Code, Ticket: cur.ID, From: cur.Owner, Expires: offer.ExpiresAt}); err != nil {
			return err
		}
		return putTicket(tx, cur)
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, offer)
	return nil
}

// AcceptRequest is the body of POST /api/v1/transfers/{code}/accept.
type AcceptRequest struct {
	Holder    *realname.Holder `json:"holder,omitempty"`
	DeviceKey string           `json:"device_key,omitempty"`
}

func (s *Server) acceptTransfer(w http.ResponseWriter, r *http.Request) error {
	var req AcceptRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	code := strings.ToUpper(r.PathValue("code"))
	var tr TransferRec
	err := s.st.db.View(r.Context(), func(tx kv.Tx) error { return getJSON(tx, bTransfers, []byte(code), &tr) })
	if errors.Is(err, errNotFound) {
		return problem(http.StatusNotFound, "unknown_transfer", "No open transfer has the code %q; ask the sender for a new one.", code)
	}
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	if !now.Before(tr.Expires) {
		return problem(http.StatusGone, "transfer_expired", "This transfer code expired at %s; ask the sender for a new one.", tr.Expires.Format(time.RFC3339))
	}
	me := user(r)
	if tr.From == me {
		return problem(http.StatusConflict, "own_ticket", "You cannot accept your own transfer; send the code to the new holder.")
	}
	t, err := s.st.Ticket(tr.Ticket)
	if err != nil {
		return err
	}
	ev := s.cfg.event(t.Event)
	if ev == nil {
		return problem(http.StatusConflict, "event_closed", "Event %q is no longer on sale here.", t.Event)
	}
	if err := s.frozen(ev, "Transfers"); err != nil {
		return err
	}
	var dev ed25519.PublicKey
	if ev.Rotating {
		k, err := base64.StdEncoding.DecodeString(req.DeviceKey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return problem(http.StatusBadRequest, "device_key_required", "This event uses rotating codes: send your phone's Ed25519 public key (32 bytes, base64) as device_key.")
		}
		dev = k
	}
	var holder HolderRec
	var clear realname.Holder
	if ev.RealName {
		if req.Holder == nil {
			return problem(http.StatusBadRequest, "holder_required", "This event is real-name: give the new holder's name and id number.")
		}
		n, err := realname.Normalise(*req.Holder)
		if errors.Is(err, realname.ErrBadName) {
			return problem(http.StatusBadRequest, "bad_name", "The name must be 1 to 30 characters.")
		}
		if err != nil {
			return problem(http.StatusBadRequest, "bad_id_number", "%s is not a valid 18-character resident identity card number.", realname.MaskID(strings.TrimSpace(req.Holder.ID)))
		}
		clear = n
		holder.IDHash = s.vault.IDHash(n.ID)
	}

	if ev.RealName {
		var err error
		if holder.Sealed, err = s.vault.Seal(clear, ticketBind(t.ID)); err != nil {
			return err
		}
	}
	// Step 1: lock the ticket, take the new holder's id slot and record
	// the transfer. From here it completes: if re-issuing fails, or the
	// process dies, reconciliation finishes it.
	err = s.st.db.Update(bg, func(tx kv.Tx) error {
		cur, err := getTicket(tx, t.ID)
		if err != nil {
			return err
		}
		if cur.State != TicketValid || cur.Transfer != code {
			return problem(http.StatusGone, "transfer_void", "This transfer was withdrawn or the ticket changed; ask the sender for a new code.")
		}
		if holder.IDHash != nil && !bytes.Equal(holder.IDHash, cur.Holder.IDHash) {
			n, err := getU64(tx, bIDCount, key(cur.Event, string(holder.IDHash)))
			if err != nil {
				return err
			}
			if int(n)+1 > s.cfg.MaxPerID {
				return problem(http.StatusConflict, "id_limit", "The id number %s already has a ticket for %s: one id number, %d ticket per show.", realname.MaskID(clear.ID), ev.Name, s.cfg.MaxPerID)
			}
			if err := addU64(tx, bIDCount, key(cur.Event, string(holder.IDHash)), 1); err != nil {
				return err
			}
		}
		if err := tx.Delete(bTransfers, []byte(code)); err != nil {
			return err
		}
		cur.State, cur.Transfer, cur.Updated = TicketTransferring, "", now.UTC()
		cur.Pending = &PendingTransfer{To: me, Holder: holder, RealName: ev.RealName, Device: dev}
		if err := tx.Put(bMoving, []byte(cur.ID), nil); err != nil {
			return err
		}
		return putTicket(tx, cur)
	})
	if err != nil {
		return err
	}
	view, err := s.finishTransfer(r.Context(), t.ID)
	if err != nil {
		s.log.Warn("transfer not finished", "ticket", t.ID, "err", err)
		writeJSON(w, http.StatusAccepted, view)
		return nil
	}
	writeJSON(w, http.StatusOK, view)
	return nil
}

// finishTransfer re-issues a ticket in transfer (a higher serial at the
// centre, so gates refuse the old code) and hands it over. Repeating it
// after a failure may raise the serial once more, which is harmless.
func (s *Server) finishTransfer(ctx context.Context, id string) (TicketView, error) {
	unlock := s.orderLocks.lock("ticket:" + id)
	defer unlock()
	t, err := s.st.Ticket(id)
	if err != nil {
		return TicketView{}, err
	}
	if t.State != TicketTransferring || t.Pending == nil {
		return s.ticketView(t), nil
	}
	it, err := s.iss.Reissue(ctx, id, t.Pending.Device)
	if err != nil {
		return s.ticketView(t), fmt.Errorf("reissue %s: %w", id, err)
	}
	if hs, ok := s.iss.(HolderSetter); ok && t.Pending.RealName {
		// Before the hand-over is recorded: a failure here is retried by
		// reconciliation like a failed re-issue.
		if err := hs.SetHolder(ctx, id, s.gateHolder(t.Pending.Holder, ticketBind(id))); err != nil {
			return s.ticketView(t), fmt.Errorf("set holder of %s: %w", id, err)
		}
	}
	var view TicketView
	err = s.st.db.Update(bg, func(tx kv.Tx) error {
		cur, err := getTicket(tx, id)
		if err != nil {
			return err
		}
		p := cur.Pending
		if cur.State != TicketTransferring || p == nil {
			view = s.ticketView(cur)
			return nil
		}
		if p.RealName {
			if len(cur.Holder.IDHash) > 0 && !bytes.Equal(p.Holder.IDHash, cur.Holder.IDHash) {
				if err := addU64(tx, bIDCount, key(cur.Event, string(cur.Holder.IDHash)), -1); err != nil {
					return err
				}
			}
			cur.Holder = p.Holder
		}
		if err := tx.Delete(bOwned, key(cur.Owner, cur.ID)); err != nil {
			return err
		}
		if err := tx.Put(bOwned, key(p.To, cur.ID), nil); err != nil {
			return err
		}
		if err := tx.Delete(bMoving, []byte(cur.ID)); err != nil {
			return err
		}
		cur.Owner, cur.Serial, cur.Code, cur.Device = p.To, it.Serial, it.Code, p.Device
		cur.Credential = rotatingCredential(it)
		cur.State, cur.Pending, cur.Updated = TicketValid, nil, s.cfg.Now().UTC()
		view = s.ticketView(cur)
		return putTicket(tx, cur)
	})
	if err != nil {
		return TicketView{}, err
	}
	s.log.Info("ticket transferred", "ticket", id, "serial", it.Serial)
	return view, nil
}
