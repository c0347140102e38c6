package sales

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/gated-dev/gated/centre/realname"
	"github.com/gated-dev/gated/kv"
)

// PurgeRealNames deletes the names, id numbers and id hashes of every
// event whose retention ran out, and reports how many records it cleared.
func (s *Server) PurgeRealNames() (int, error) {
	now := s.cfg.Now()
	ret := realname.Retention{Days: s.cfg.RealNameRetentionDays}
	n := 0
	for _, ev := range s.cfg.Events {
		if !ev.RealName || !ret.Due(ev.Ends, now) {
			continue
		}
		var cleared int
		err := s.st.db.Update(bg, func(tx kv.Tx) error {
			cleared = 0
			if done, err := has(tx, bPurged, []byte(ev.ID)); err != nil || done {
				return err
			}
			// Collect first, write after: a scan's bucket is not written
			// during the scan.
			var ts []TicketRec
			if err := tx.Scan(bTickets, nil, nil, func(_, v []byte) error {
				var t TicketRec
				if err := json.Unmarshal(v, &t); err != nil {
					return err
				}
				if t.Event == ev.ID && len(t.Holder.IDHash)+len(t.Holder.Sealed) > 0 {
					ts = append(ts, t)
				}
				return nil
			}); err != nil {
				return err
			}
			for i := range ts {
				ts[i].Holder = HolderRec{}
				if err := putTicket(tx, &ts[i]); err != nil {
					return err
				}
				cleared++
			}
			var os []Order
			if err := tx.Scan(bOrders, nil, nil, func(_, v []byte) error {
				var o Order
				if err := json.Unmarshal(v, &o); err != nil {
					return err
				}
				if o.Event == ev.ID && len(o.Holders) > 0 {
					os = append(os, o)
				}
				return nil
			}); err != nil {
				return err
			}
			for i := range os {
				cleared += len(os[i].Holders)
				os[i].Holders = nil
				if err := putOrder(tx, &os[i]); err != nil {
					return err
				}
			}
			var ids [][]byte
			if err := kv.ScanPrefix(tx, bIDCount, key(ev.ID, ""), func(k, _ []byte) error {
				ids = append(ids, append([]byte(nil), k...))
				return nil
			}); err != nil {
				return err
			}
			for _, k := range ids {
				if err := tx.Delete(bIDCount, k); err != nil {
					return err
				}
			}
			return tx.Put(bPurged, []byte(ev.ID), []byte(now.UTC().Format(time.RFC3339)))
		})
		if err != nil {
			return n, fmt.Errorf("purge %s: %w", ev.ID, err)
		}
		n += cleared
		s.log.Info("real-name records purged", "event", ev.ID, "records", cleared)
	}
	return n, nil
}

// PurgeSessions deletes expired sign-ins and says how many.
func (s *Server) PurgeSessions() (int, error) {
	now := s.cfg.Now()
	n := 0
	err := s.st.db.Update(bg, func(tx kv.Tx) error {
		var old [][]byte
		if err := tx.Scan(bSessions, nil, nil, func(k, v []byte) error {
			var sess Session
			if json.Unmarshal(v, &sess) != nil || !now.Before(sess.Expires) {
				old = append(old, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range old {
			if err := tx.Delete(bSessions, k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	return n, err
}
