package centre

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gated-dev/gated/wire"
	"github.com/gated-dev/gated/wire/wiretest"
)

// memBus records what the server publishes.
type memBus struct {
	mu   sync.Mutex
	msgs []message
}

func (b *memBus) Publish(topic string, payload []byte, _ bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.msgs = append(b.msgs, message{topic, payload})
	return nil
}

func (b *memBus) Subscribe([]string, func(string, []byte)) error { return nil }

// uses opens every Uses message published on topic, and forgets them.
func (b *memBus) uses(t *testing.T, c *Centre, topic string) []*wire.Uses {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*wire.Uses
	var rest []message
	for _, m := range b.msgs {
		if m.topic != topic || wire.PeekType(m.payload) != wire.TypeUses {
			rest = append(rest, m)
			continue
		}
		tp, _ := wire.ParseTopic(topic)
		u, err := wire.OpenUses(m.payload, c.RootPublic(), tp.Venue, "g2")
		if err != nil {
			t.Fatalf("uses on %s: %v", topic, err)
		}
		out = append(out, u)
	}
	b.msgs = rest
	return out
}

func pages(us []*wire.Uses) string {
	var s []string
	for _, u := range us {
		p := fmt.Sprintf("%d-%d/%d more=%v", u.From, u.To, u.Head, u.More)
		if u.Restart {
			p += " restart"
		}
		s = append(s, p)
	}
	return fmt.Sprint(s)
}

// TestServeUses: a batch's first admissions are fanned out numbered to
// every venue with a gate of the event; a hello's cursor gets pages, in
// rounds; a heartbeat whose cursor is behind the log gets a catch-up
// unasked.
func TestServeUses(t *testing.T) {
	c, _ := newCentre(t)
	bus := &memBus{}
	s := NewServer(c, bus, ServerOptions{UsesPage: 2, UsesPages: 2})
	ts, err := c.Issue(IssueRequest{Event: "E", Count: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.NoteGate("annex", "a1", "E"); err != nil { // another venue of the event
		t.Fatal(err)
	}
	bt := wiretest.Batch(t, wire.Batch{Gate: "g1", Instance: "i1"}, []uint64{1, 2, 3, 4, 5}, func(s uint64) map[string]any {
		e := wiretest.Entry("g1", "i1", s, "admit", "ok", ts[s-1].ID, time.Now().UTC())
		e["code"] = ts[s-1].Code()
		return e
	})
	raw, _ := json.Marshal(bt.Batch)
	if err := s.handle(message{wire.GateTopic("arena", "g1", wire.KindEntries), raw}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"arena", "annex"} {
		if got := pages(bus.uses(t, c, wire.VenueTopic(v, wire.KindLive))); got != "[1-5/5 more=false]" {
			t.Errorf("fan-out to %s: %s", v, got)
		}
	}
	catchup := func(m message) string {
		t.Helper()
		if err := s.handle(m); err != nil {
			t.Fatal(err)
		}
		select {
		case cu := <-s.catch:
			if err := s.catchup(cu); err != nil {
				t.Fatal(err)
			}
		default:
			return "no catch-up"
		}
		return pages(bus.uses(t, c, wire.GateTopic("arena", "g2", wire.KindSync)))
	}
	hello := func(cur uint64) message {
		b, _ := json.Marshal(wire.Hello{V: 1, Gate: "g2", Instance: "x", Event: "E", Version: 1 << 40, Reason: "connect", Uses: &cur})
		return message{wire.GateTopic("arena", "g2", wire.KindHello), b}
	}
	status := func(cur uint64) message {
		b, _ := json.Marshal(wire.Status{V: 1, Gate: "g2", Online: true, Event: "E", WhitelistVersion: 1 << 40, Uses: &cur})
		return message{wire.GateTopic("arena", "g2", wire.KindStatus), b}
	}
	for _, st := range []struct {
		name string
		m    message
		want string
	}{
		{"hello from 0: two pages, more", hello(0), "[1-2/5 more=false 3-4/5 more=true]"},
		{"status at the head", status(5), "no catch-up"},
		{"status behind", status(4), "[5-5/5 more=false]"},
		{"hello at the head: an empty page", hello(5), "[6-5/5 more=false]"},
		{"hello beyond the head: the log from its start", hello(9), "[1-2/5 more=false restart 3-4/5 more=true]"},
	} {
		s.last = map[string]time.Time{} // no rate limit between steps
		if got := catchup(st.m); got != st.want {
			t.Errorf("%s: %s; want %s", st.name, got, st.want)
		}
	}
}
