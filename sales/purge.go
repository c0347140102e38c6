package sales

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gated-dev/gated/realname"
	bolt "go.etcd.io/bbolt"
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
		err := s.st.db.Update(func(tx *bolt.Tx) error {
			if tx.Bucket(bPurged).Get([]byte(ev.ID)) != nil {
				return nil
			}
			c := tx.Bucket(bTickets).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				var t TicketRec
				if err := json.Unmarshal(v, &t); err != nil {
					return err
				}
				if t.Event != ev.ID || len(t.Holder.IDHash)+len(t.Holder.Sealed) == 0 {
					continue
				}
				t.Holder = HolderRec{}
				if err := putTicket(tx, &t); err != nil {
					return err
				}
				n++
			}
			c = tx.Bucket(bOrders).Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				var o Order
				if err := json.Unmarshal(v, &o); err != nil {
					return err
				}
				if o.Event != ev.ID || len(o.Holders) == 0 {
					continue
				}
				n += len(o.Holders)
				o.Holders = nil
				if err := putOrder(tx, &o); err != nil {
					return err
				}
			}
			prefix := key(ev.ID, "")
			ic := tx.Bucket(bIDCount).Cursor()
			for k, _ := ic.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = ic.Seek(prefix) {
				if err := ic.Delete(); err != nil {
					return err
				}
			}
			return tx.Bucket(bPurged).Put([]byte(ev.ID), []byte(now.UTC().Format(time.RFC3339)))
		})
		if err != nil {
			return n, fmt.Errorf("purge %s: %w", ev.ID, err)
		}
		s.log.Info("real-name records purged", "event", ev.ID, "records", n)
	}
	return n, nil
}

// PurgeSessions deletes expired sign-ins and says how many.
func (s *Server) PurgeSessions() (int, error) {
	now := s.cfg.Now()
	n := 0
	err := s.st.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bSessions).Cursor()
		for k, v := c.First(); k != nil; {
			var sess Session
			if json.Unmarshal(v, &sess) == nil && now.Before(sess.Expires) {
				k, v = c.Next()
				continue
			}
			next := append([]byte(nil), k...)
			if err := c.Delete(); err != nil {
				return err
			}
			n++
			k, v = c.Seek(next)
		}
		return nil
	})
	return n, err
}
