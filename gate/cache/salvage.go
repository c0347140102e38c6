package cache

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gated-dev/gated/verify"
	bolt "go.etcd.io/bbolt"
)

// Salvage: reading what can still be read out of a damaged store, and
// carrying it into a fresh one so the old journal still reaches the centre
// exactly once (the centre dedupes by gate, instance and sequence number).
//
// Two passes. The first walks the buckets through bbolt, opened read-only
// (which skips the freelist rebuild that panics on a damaged page), and
// stops a bucket at its first damaged page. The second reads every page of
// the file as raw bytes and takes, from any leaf page that parses, the
// records of the buckets the first pass could not finish: bbolt copies on
// write, so older copies of lost pages often survive in free pages. A
// record found only there is taken only when it cannot be a leftover of a
// commit that failed: its sequence number is within the journal's, and no
// other version of it was found.

// SalvageLine is one line of a salvage file (JSON lines): first one "meta"
// line, then "journal" records in sequence order, then "use" and "outbox"
// records.
type SalvageLine struct {
	Kind     string          `json:"kind"`
	Instance string          `json:"instance,omitempty"` // meta
	Event    string          `json:"event,omitempty"`    // meta
	LastSeq  uint64          `json:"last_seq,omitempty"` // meta: the journal's sequence, 0 if unreadable
	Seq      uint64          `json:"seq,omitempty"`      // journal, outbox
	Ticket   string          `json:"ticket,omitempty"`   // use
	Record   json.RawMessage `json:"record,omitempty"`   // journal: the record as stored; use: the use
}

// SalvageReport says what was copied out and what was lost.
type SalvageReport struct {
	Instance, Event       string
	LastSeq               uint64 // the journal's sequence number; 0 if it could not be read
	Journal, Uses, Outbox int    // records written
	FromPages             int    // of those, found by the raw page scan
	Missing               []string
	Damage                []string // what could not be read, in words
	InDoubt               []uint64 // sequence numbers found in more than one version: left out
}

// Lost says in one line what the salvage could not recover.
func (r *SalvageReport) Lost() string {
	if len(r.Missing) == 0 && len(r.Damage) == 0 && len(r.InDoubt) == 0 {
		return "nothing lost"
	}
	var parts []string
	if len(r.Missing) > 0 {
		parts = append(parts, "journal records missing: "+strings.Join(r.Missing, ", "))
	}
	if len(r.InDoubt) > 0 {
		parts = append(parts, fmt.Sprintf("%d records in doubt (two versions found) left out: %v", len(r.InDoubt), r.InDoubt))
	}
	parts = append(parts, r.Damage...)
	return strings.Join(parts, "; ")
}

type salvaged struct {
	instance, event string
	lastSeq         uint64
	journal         map[uint64][]byte
	uses            map[verify.TicketID][]byte
	outbox          map[uint64]bool
	complete        map[string]bool // buckets the first pass read to the end
	damage          []string
}

// Salvage reads the store file at path, damaged or not, and writes every
// readable journal record, use and outbox record to w as SalvageLines.
func Salvage(path string, w io.Writer) (*SalvageReport, error) {
	s := &salvaged{journal: map[uint64][]byte{}, uses: map[verify.TicketID][]byte{}, outbox: map[uint64]bool{}, complete: map[string]bool{}}
	s.logical(path)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("salvage: read %s: %w", path, err)
	}
	rep := &SalvageReport{}
	if !(s.complete["journal"] && s.complete["used"] && s.complete["outbox"]) {
		rep.FromPages, rep.InDoubt = s.pages(raw)
	}
	s.fromJournal()
	rep.Instance, rep.Event, rep.LastSeq, rep.Damage = s.instance, s.event, s.lastSeq, s.damage
	return rep, s.write(w, rep)
}

// fromJournal fills in from the journal records what their own buckets
// lost: the instance and event (every record names them), the uses (every
// admission is one), and the outbox. An unreadable outbox means every
// record is sent again: the centre books each once, so resending is safe
// where leaving one out is not.
func (s *salvaged) fromJournal() {
	seqs := make([]uint64, 0, len(s.journal))
	for seq := range s.journal {
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for _, seq := range seqs {
		var e Decision
		if json.Unmarshal(s.journal[seq], &e) != nil {
			continue
		}
		if s.instance == "" {
			s.instance = strings.TrimSuffix(e.ID, "-"+strconv.FormatUint(seq, 10))
		}
		if s.event == "" {
			s.event = e.Event
		}
		if !s.complete["used"] && e.Verdict == Admit {
			if id, err := verify.ParseTicketID(e.Ticket); err == nil {
				if _, ok := s.uses[id]; !ok {
					s.uses[id], _ = json.Marshal(verify.Use{Seq: e.Seq, At: e.At, Gate: e.Gate})
				}
			}
		}
		if !s.complete["outbox"] {
			s.outbox[seq] = true
		}
	}
	if !s.complete["outbox"] && len(seqs) > 0 {
		s.damage = append(s.damage, "the outbox could not be read: every salvaged record will be sent to the centre again, which books each once")
	}
}

// logical is the first pass, through bbolt.
func (s *salvaged) logical(path string) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			s.damage = append(s.damage, fmt.Sprintf("the store does not open: %v", r))
		}
	}()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		s.damage = append(s.damage, fmt.Sprintf("the store does not open: %v", err))
		return
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		s.bucket(tx, "meta", func(k, v []byte) {
			switch string(k) {
			case string(kInstance):
				s.instance = string(v)
			case string(kEvent):
				s.event = string(v)
			}
		})
		s.bucket(tx, "journal", func(k, v []byte) {
			if len(k) == 8 {
				s.journal[binary.BigEndian.Uint64(k)] = bytes.Clone(v)
			}
		})
		s.bucket(tx, "used", func(k, v []byte) {
			if len(k) == verify.TicketIDLen {
				s.uses[verify.TicketID(k)] = bytes.Clone(v)
			}
		})
		s.bucket(tx, "outbox", func(k, _ []byte) {
			if len(k) == 8 {
				s.outbox[binary.BigEndian.Uint64(k)] = true
			}
		})
		func() {
			defer func() { recover() }()
			if b := tx.Bucket(bJournal); b != nil {
				s.lastSeq = b.Sequence()
			}
		}()
		return nil
	})
	if err != nil {
		s.damage = append(s.damage, err.Error())
	}
}

// bucket reads one bucket to its end or its first damaged page.
func (s *salvaged) bucket(tx *bolt.Tx, name string, fn func(k, v []byte)) {
	n := 0
	defer func() {
		if r := recover(); r != nil {
			s.damage = append(s.damage, fmt.Sprintf("bucket %s: damaged after %d records (%v)", name, n, r))
		}
	}()
	b := tx.Bucket([]byte(name))
	if b == nil {
		s.damage = append(s.damage, "bucket "+name+" not found")
		return
	}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		fn(k, v)
		n++
	}
	s.complete[name] = true
}

// Raw page layout (bbolt's, native byte order: little-endian on every
// platform gated ships for).
const (
	pageHeader   = 16
	leafElemSize = 16
	leafFlag     = 0x02
	metaFlag     = 0x04
	boltMagic    = 0xED0CDAED
)

// pages is the second pass over the file's raw bytes. It returns how many
// records it added, and the sequence numbers it found in two versions.
func (s *salvaged) pages(raw []byte) (added int, doubt []uint64) {
	psize := 4096
	for _, off := range []int{0, 4096, 16384, 65536} {
		// Meta page 0, or 1 (at the page size), says the page size.
		if off+pageHeader+12 <= len(raw) && binary.LittleEndian.Uint16(raw[off+8:]) == metaFlag &&
			binary.LittleEndian.Uint32(raw[off+pageHeader:]) == boltMagic {
			psize = int(binary.LittleEndian.Uint32(raw[off+pageHeader+8:]))
			break
		}
	}
	if psize < 512 || psize > 1<<20 {
		psize = 4096
	}
	journal := map[uint64][][]byte{}
	for p := 0; p+pageHeader <= len(raw); p += psize {
		pg := raw[p:]
		if binary.LittleEndian.Uint64(pg) != uint64(p/psize) || binary.LittleEndian.Uint16(pg[8:]) != leafFlag {
			continue
		}
		n := int(binary.LittleEndian.Uint16(pg[10:]))
		end := min(len(pg), (1+int(binary.LittleEndian.Uint32(pg[12:])))*psize)
		pg = pg[:end]
		for i := 0; i < n; i++ {
			e := pageHeader + i*leafElemSize
			if e+leafElemSize > len(pg) {
				break
			}
			flags := binary.LittleEndian.Uint32(pg[e:])
			pos := int(binary.LittleEndian.Uint32(pg[e+4:]))
			ks, vs := int(binary.LittleEndian.Uint32(pg[e+8:])), int(binary.LittleEndian.Uint32(pg[e+12:]))
			if flags != 0 || pos < 0 || ks < 0 || vs < 0 || e+pos+ks+vs > len(pg) || e+pos+ks+vs < e {
				continue
			}
			k, v := pg[e+pos:e+pos+ks], pg[e+pos+ks:e+pos+ks+vs]
			switch {
			case ks == 8 && vs == 0:
				if !s.complete["outbox"] {
					s.outbox[binary.BigEndian.Uint64(k)] = true
				}
			case ks == 8 && !s.complete["journal"]:
				seq := binary.BigEndian.Uint64(k)
				var je struct {
					Seq uint64 `json:"seq"`
					ID  string `json:"id"`
				}
				if json.Unmarshal(v, &je) != nil || je.Seq != seq || !strings.HasSuffix(je.ID, "-"+strconv.FormatUint(seq, 10)) {
					continue
				}
				if _, ok := s.journal[seq]; ok {
					continue // the first pass read it: that version is the committed one
				}
				known := false
				for _, o := range journal[seq] {
					known = known || bytes.Equal(o, v)
				}
				if !known {
					journal[seq] = append(journal[seq], bytes.Clone(v))
				}
			case ks == verify.TicketIDLen && !s.complete["used"]:
				var u verify.Use
				if json.Unmarshal(v, &u) != nil || u.Gate == "" {
					continue
				}
				id := verify.TicketID(k)
				if _, ok := s.uses[id]; !ok {
					s.uses[id] = bytes.Clone(v)
					added++
				}
			}
		}
	}
	for seq, vs := range journal {
		switch {
		case s.lastSeq > 0 && seq > s.lastSeq:
			// Beyond the journal's sequence: a page of a commit that failed.
		case len(vs) > 1:
			doubt = append(doubt, seq)
		default:
			s.journal[seq] = vs[0]
			added++
		}
	}
	// An outbox record is only worth sending with its journal record.
	for seq := range s.outbox {
		if _, ok := s.journal[seq]; !ok || (s.lastSeq > 0 && seq > s.lastSeq) {
			delete(s.outbox, seq)
		}
	}
	sort.Slice(doubt, func(i, j int) bool { return doubt[i] < doubt[j] })
	return added, doubt
}

func (s *salvaged) write(w io.Writer, rep *SalvageReport) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(SalvageLine{Kind: "meta", Instance: s.instance, Event: s.event, LastSeq: s.lastSeq}); err != nil {
		return err
	}
	seqs := make([]uint64, 0, len(s.journal))
	for seq := range s.journal {
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	top := s.lastSeq
	if len(seqs) > 0 {
		top = max(top, seqs[len(seqs)-1])
	}
	next := uint64(1)
	for _, seq := range seqs {
		if seq > next {
			rep.Missing = append(rep.Missing, seqRange(next, seq-1))
		}
		next = seq + 1
		if err := enc.Encode(SalvageLine{Kind: "journal", Seq: seq, Record: s.journal[seq]}); err != nil {
			return err
		}
	}
	if next <= top {
		rep.Missing = append(rep.Missing, seqRange(next, top))
	}
	ids := make([]verify.TicketID, 0, len(s.uses))
	for id := range s.uses {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return bytes.Compare(ids[i][:], ids[j][:]) < 0 })
	for _, id := range ids {
		if err := enc.Encode(SalvageLine{Kind: "use", Ticket: id.String(), Record: s.uses[id]}); err != nil {
			return err
		}
	}
	out := make([]uint64, 0, len(s.outbox))
	for seq := range s.outbox {
		out = append(out, seq)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	for _, seq := range out {
		if err := enc.Encode(SalvageLine{Kind: "outbox", Seq: seq}); err != nil {
			return err
		}
	}
	rep.Journal, rep.Uses, rep.Outbox = len(seqs), len(ids), len(out)
	return bw.Flush()
}

func seqRange(a, b uint64) string {
	if a == b {
		return strconv.FormatUint(a, 10)
	}
	return fmt.Sprintf("%d-%d", a, b)
}

// ImportResult says what ImportSalvage carried into the store.
type ImportResult struct {
	Instance              string
	Journal, Uses, Outbox int
	NextSeq               uint64
}

// ErrImport refuses a salvage import into a store that is not fresh or is
// for another event.
var ErrImport = errors.New("cannot import the salvage into this store")

// seqGap is added to the journal's sequence when the damaged store's own
// could not be read, so new decisions never reuse a number the centre may
// already hold under the old instance.
const seqGap = 100000

// ImportSalvage carries a salvage file into a freshly provisioned store:
// the old journal, uses and outbox, and the old instance id, so the uplink
// sends the old outbox under its own ids and the centre books each record
// once. New decisions continue after the old journal.
func (s *Store) ImportSalvage(r io.Reader) (*ImportResult, error) {
	st, err := s.State()
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(r)
	var meta SalvageLine
	if err := dec.Decode(&meta); err != nil || meta.Kind != "meta" || !validInstance(meta.Instance) {
		return nil, fmt.Errorf("%w: the file does not start with a salvage meta line (from gated salvage --out)", ErrImport)
	}
	if meta.Event != "" && meta.Event != st.Event {
		return nil, fmt.Errorf("%w: the salvage is of event %q, this store holds %q", ErrImport, meta.Event, st.Event)
	}
	res := &ImportResult{Instance: meta.Instance}
	err = s.db.Update(func(tx *bolt.Tx) error {
		j := tx.Bucket(bJournal)
		if j.Sequence() != 0 || j.Stats().KeyN != 0 {
			return fmt.Errorf("%w: it already holds decisions; provision a fresh --data directory and import there", ErrImport)
		}
		top := meta.LastSeq
		for {
			var l SalvageLine
			if err := dec.Decode(&l); err == io.EOF {
				break
			} else if err != nil {
				return fmt.Errorf("salvage file: %w", err)
			}
			switch l.Kind {
			case "journal":
				if l.Seq == 0 {
					return fmt.Errorf("salvage file: journal record without a sequence number")
				}
				if err := j.Put(binary.BigEndian.AppendUint64(nil, l.Seq), l.Record); err != nil {
					return err
				}
				top = max(top, l.Seq)
				res.Journal++
			case "use":
				id, err := verify.ParseTicketID(l.Ticket)
				if err != nil {
					return fmt.Errorf("salvage file: %w", err)
				}
				if b := tx.Bucket(bUsed); b.Get(id[:]) == nil {
					if err := b.Put(id[:], l.Record); err != nil {
						return err
					}
					res.Uses++
				}
			case "outbox":
				if err := tx.Bucket(bOutbox).Put(binary.BigEndian.AppendUint64(nil, l.Seq), nil); err != nil {
					return err
				}
				res.Outbox++
			}
		}
		if meta.LastSeq == 0 {
			top += seqGap
		}
		res.NextSeq = top + 1
		if err := j.SetSequence(top); err != nil {
			return err
		}
		return tx.Bucket(bMeta).Put(kInstance, []byte(meta.Instance))
	})
	if err != nil {
		return nil, err
	}
	s.instance = meta.Instance
	return res, nil
}

func validInstance(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}
