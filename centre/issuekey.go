package centre

import (
	"encoding/json"
	"fmt"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

var bIssueKeys = []byte("issue_keys")

// issuedForKey returns the tickets an earlier Issue with r.Key made, or
// nil if the key is new. A key reused for another request is an error.
func issuedForKey(tx *bolt.Tx, r IssueRequest) ([]Ticket, error) {
	b := tx.Bucket(bIssueKeys)
	if b == nil {
		return nil, nil
	}
	v := b.Get([]byte(r.Key))
	if v == nil {
		return nil, nil
	}
	var ids []verify.TicketID
	if err := json.Unmarshal(v, &ids); err != nil {
		return nil, fmt.Errorf("issue key %q: %w", r.Key, err)
	}
	out := make([]Ticket, 0, len(ids))
	for _, id := range ids {
		t, err := getTicket(tx, id)
		if err != nil {
			return nil, err
		}
		if t.Event != r.Event {
			return nil, fmt.Errorf("issue key %q was used for event %s, not %s", r.Key, t.Event, r.Event)
		}
		out = append(out, *t)
	}
	if len(out) != r.Count {
		return nil, fmt.Errorf("issue key %q was used for %d tickets, not %d", r.Key, len(out), r.Count)
	}
	return out, nil
}

func rememberKey(tx *bolt.Tx, key string, ts []Ticket) error {
	if key == "" {
		return nil
	}
	b, err := tx.CreateBucketIfNotExists(bIssueKeys)
	if err != nil {
		return err
	}
	ids := make([]verify.TicketID, len(ts))
	for i := range ts {
		ids[i] = ts[i].ID
	}
	v, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), v)
}
