package wire

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseTopic(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Topic
		ok   bool
	}{
		{"gated/v1/v1/g-1/entries", Topic{"v1", "g-1", KindEntries}, true},
		{"gated/v1/v1/whitelist", Topic{"v1", "", KindWhitelist}, true},
		{"gated/v1/v1/live", Topic{"v1", "", KindLive}, true},
		{"gated/v1/v1/g/unknown", Topic{}, false},
		{"gated/v1/v+/g/entries", Topic{}, false},
		{"gated/v2/v/g/entries", Topic{}, false},
		{"gated/v1/v/g/entries/x", Topic{}, false},
	} {
		got, err := ParseTopic(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseTopic(%q) = %+v, %v", tc.in, got, err)
		}
	}
}

func batchJSON(instance string, seqs ...uint64) []byte {
	b := Batch{V: Version, Gate: "g1", Instance: instance, SentAt: time.Now()}
	for _, s := range seqs {
		if b.First == 0 {
			b.First = s
		}
		b.Last = s
		e, _ := json.Marshal(Entry{Seq: s, ID: instance + "-" + itoa(s), Gate: "g1", Verdict: "admit", Ticket: strings.Repeat("ab", 12)})
		b.Entries = append(b.Entries, e)
	}
	out, _ := json.Marshal(b)
	return out
}

func itoa(u uint64) string { return strconv.FormatUint(u, 10) }

func TestParseBatch(t *testing.T) {
	good := batchJSON("abc", 3, 4, 5)
	if p, err := ParseBatch(good, "g1"); err != nil || len(p.Parsed) != 3 || p.Parsed[2].Seq != 5 {
		t.Fatalf("good batch: %v", err)
	}
	for name, tc := range map[string]struct {
		b    []byte
		gate string
	}{
		"other gate's topic": {good, "g2"},
		"not json":           {[]byte("{"), "g1"},
		"out of order":       {batchJSON("abc", 5, 4), "g1"},
		"bad instance":       {batchJSON("a/b", 1), "g1"},
		"ping with range":    {[]byte(`{"v":1,"gate":"g1","instance":"a","first":1,"last":2,"entries":[]}`), "g1"},
		"wrong id":           {[]byte(`{"v":1,"gate":"g1","instance":"a","first":1,"last":1,"entries":[{"seq":1,"id":"b-1","gate":"g1","verdict":"deny"}]}`), "g1"},
		"admit no ticket":    {[]byte(`{"v":1,"gate":"g1","instance":"a","first":1,"last":1,"entries":[{"seq":1,"id":"a-1","gate":"g1","verdict":"admit"}]}`), "g1"},
		"version":            {[]byte(`{"v":2,"gate":"g1","instance":"a"}`), "g1"},
	} {
		if _, err := ParseBatch(tc.b, tc.gate); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSignedMessages(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, rogue, _ := ed25519.GenerateKey(rand.Reader)
	ack, _ := Sign(TypeAck, &Ack{Venue: "v", Gate: "g", First: 1, Last: 2}, priv)
	if a, err := OpenAck(ack, pub, "v", "g"); err != nil || a.Last != 2 {
		t.Fatalf("OpenAck: %v", err)
	}
	if _, err := OpenAck(ack, pub, "v", "other"); err == nil {
		t.Error("ack for another gate accepted")
	}
	forged, _ := Sign(TypeAck, &Ack{Venue: "v", Gate: "g", First: 1, Last: 2}, rogue)
	if _, err := OpenAck(forged, pub, "v", "g"); !errors.Is(err, ErrSignature) {
		t.Errorf("forged ack: %v", err)
	}
	delta, _ := Sign(TypeDelta, &Delta{Event: "e", Prev: 1, Version: 2}, priv)
	if _, err := OpenAck(delta, pub, "v", "g"); !errors.Is(err, ErrSignature) {
		t.Errorf("delta passed as ack: %v", err)
	}
	if d, err := OpenDelta(delta, pub); err != nil || d.Version != 2 {
		t.Errorf("OpenDelta: %v", err)
	}
	back, _ := Sign(TypeDelta, &Delta{Event: "e", Prev: 2, Version: 2}, priv)
	if _, err := OpenDelta(back, pub); err == nil {
		t.Error("delta with prev >= version accepted")
	}
	m := &Manifest{Venue: "v", Gate: "g", ID: 7, Event: "e", Version: 3, TrustList: nil}
	mb, _ := Sign(TypeManifest, m, priv)
	if _, err := OpenManifest(mb, pub, "v", "g"); err == nil {
		t.Error("manifest without trust list accepted")
	}
}

func TestChunk(t *testing.T) {
	c0, c1 := Chunk(7, 0, []byte("abc")), Chunk(7, 1, nil)
	m := &Manifest{ID: 7, Chunks: []string{ChunkSum(c0), ChunkSum(c1)}}
	if i, rec, err := ParseChunk(c0, m); err != nil || i != 0 || string(rec) != "abc" {
		t.Fatalf("ParseChunk: %d %q %v", i, rec, err)
	}
	bad := append([]byte(nil), c0...)
	bad[len(bad)-1] ^= 1
	if _, _, err := ParseChunk(bad, m); err == nil {
		t.Error("altered chunk accepted")
	}
	if _, _, err := ParseChunk(Chunk(8, 0, []byte("abc")), m); err == nil {
		t.Error("chunk of another snapshot accepted")
	}
}

// FuzzUplink feeds the centre's parsers: nothing may panic.
func FuzzUplink(f *testing.F) {
	f.Add("gated/v1/v/g1/entries", batchJSON("abc", 1, 2))
	f.Add("gated/v1/v/g1/status", []byte(`{"v":1,"gate":"g1","online":true}`))
	f.Add("gated/v1/v/g1/hello", []byte(`{"v":1,"gate":"g1","event":"e","version":3}`))
	f.Fuzz(func(t *testing.T, topic string, b []byte) {
		tp, err := ParseTopic(topic)
		if err != nil {
			return
		}
		ParseBatch(b, tp.Gate)
		ParseStatus(b, tp.Gate)
		ParseHello(b, tp.Gate)
	})
}

// FuzzDownlink feeds the gate's parsers: nothing may panic, and nothing
// unsigned may pass.
func FuzzDownlink(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	d, _ := Sign(TypeDelta, &Delta{Event: "e", Prev: 1, Version: 2}, priv)
	a, _ := Sign(TypeAck, &Ack{Venue: "v", Gate: "g", First: 1, Last: 2}, priv)
	l, _ := Sign(TypeLive, &Live{Venue: "v", Event: "e"}, priv)
	us, _ := Sign(TypeUses, &Uses{Venue: "v", Event: "e", From: 1, To: 1, Head: 1, Uses: []LoggedUse{{N: 1}}}, priv)
	f.Add(us)
	f.Add(d)
	f.Add(a)
	f.Add(l)
	f.Add(Chunk(1, 0, []byte("x")))
	m := &Manifest{ID: 1, Chunks: []string{ChunkSum(Chunk(1, 0, []byte("x")))}}
	f.Fuzz(func(t *testing.T, b []byte) {
		PeekType(b)
		OpenAck(b, pub, "v", "g")
		OpenDelta(b, pub)
		OpenManifest(b, pub, "v", "g")
		OpenLive(b, pub, "v")
		if u, err := OpenUses(b, pub, "v", "g"); err == nil && uint64(len(u.Uses)) != u.To+1-u.From {
			t.Fatalf("uses %d-%d opened with %d uses", u.From, u.To, len(u.Uses))
		}
		ParseChunk(b, m)
	})
}

// TestOpenUses: a gate advances its cursor to To on the strength of a
// Uses message, so one whose uses are not exactly From..To is refused.
func TestOpenUses(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	u := func(ns ...uint64) []LoggedUse {
		var out []LoggedUse
		for _, n := range ns {
			out = append(out, LoggedUse{N: n, Gate: "g2", Seq: n})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		msg  Uses
		ok   bool
	}{
		{"live 1-2", Uses{Venue: "v", Event: "E", From: 1, To: 2, Head: 2, Uses: u(1, 2)}, true},
		{"page for this gate", Uses{Venue: "v", Gate: "g1", Event: "E", From: 3, To: 3, Head: 9, More: true, Uses: u(3)}, true},
		{"empty page at the head", Uses{Venue: "v", Gate: "g1", Event: "E", From: 4, To: 3, Head: 3}, true},
		{"claims more than it holds", Uses{Venue: "v", Event: "E", From: 1, To: 5, Head: 5, Uses: u(1, 2)}, false},
		{"numbers out of place", Uses{Venue: "v", Event: "E", From: 1, To: 2, Head: 2, Uses: u(2, 1)}, false},
		{"empty page skipping numbers", Uses{Venue: "v", Gate: "g1", Event: "E", From: 1, To: 9, Head: 9}, false},
		{"beyond the head", Uses{Venue: "v", Event: "E", From: 1, To: 2, Head: 1, Uses: u(1, 2)}, false},
		{"starts at 0", Uses{Venue: "v", Event: "E", From: 0, To: 1, Head: 1, Uses: u(0, 1)}, false},
		{"another venue", Uses{Venue: "w", Event: "E", From: 1, To: 1, Head: 1, Uses: u(1)}, false},
		{"another gate", Uses{Venue: "v", Gate: "g2", Event: "E", From: 1, To: 1, Head: 1, Uses: u(1)}, false},
		{"no event", Uses{Venue: "v", From: 1, To: 1, Head: 1, Uses: u(1)}, false},
		{"restart page", Uses{Venue: "v", Gate: "g1", Event: "E", From: 1, To: 1, Head: 1, Restart: true, Uses: u(1)}, true},
		{"restart venue-wide", Uses{Venue: "v", Event: "E", From: 1, To: 1, Head: 1, Restart: true, Uses: u(1)}, false},
		{"restart not from 1", Uses{Venue: "v", Gate: "g1", Event: "E", From: 2, To: 2, Head: 2, Restart: true, Uses: u(2)}, false},
	} {
		b, err := Sign(TypeUses, &tc.msg, priv)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := OpenUses(b, pub, "v", "g1"); (err == nil) != tc.ok {
			t.Errorf("%s: %v; want ok %v", tc.name, err, tc.ok)
		}
	}
	b, _ := Sign(TypeLive, &Uses{Venue: "v", Event: "E", From: 1, To: 1, Head: 1, Uses: u(1)}, priv)
	if _, err := OpenUses(b, pub, "v", "g1"); err == nil {
		t.Error("a document of another type opened as Uses")
	}
}
