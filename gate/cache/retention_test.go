package cache_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/internal/testreq"
	"github.com/gated-dev/gated/verify"
)

var day0 = time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)

// record commits decisions at the given times; every third one admits a
// ticket of its own, so uses pile up as at a real gate.
func (f *fixture) record(t testing.TB, at ...time.Time) {
	t.Helper()
	st, _ := f.store.State()
	v := verify.NewVerifier(verify.Policy{Event: st.Event}, st.Trust)
	for i, a := range at {
		sc := cache.Scan{At: a, Gate: "g1", Pre: verify.Result{Reason: verify.ReasonMalformed}}
		if i%3 == 0 {
			e := bigTicket(uint32(a.UnixNano() / 1e6))
			sc.Token = &verify.Token{Credential: verify.Credential{Ticket: e.ID}}
			sc.Pre = verify.Result{Reason: verify.ReasonOK}
		}
		if _, err := f.store.Record(context.Background(), v, sc); err != nil {
			t.Fatal(err)
		}
	}
}

// hourly is n times an hour apart from start.
func hourly(start time.Time, n int) []time.Time {
	var ts []time.Time
	for i := range n {
		ts = append(ts, start.Add(time.Duration(i)*time.Hour))
	}
	return ts
}

// everything is the archive then the live journal, as gated journal
// --archive prints them.
func everything(t testing.TB, s *cache.Store, dir string) []cache.Decision {
	t.Helper()
	var all []cache.Decision
	add := func(e cache.Decision) error { all = append(all, e); return nil }
	if err := s.ArchivedJournal(dir, add); err != nil {
		t.Fatal(err)
	}
	if err := s.Journal(0, add); err != nil {
		t.Fatal(err)
	}
	return all
}

func checkSequence(t testing.TB, all []cache.Decision, n int) {
	t.Helper()
	if len(all) != n {
		t.Fatalf("%d records in archive and journal, want %d", len(all), n)
	}
	for i, e := range all {
		if e.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d: lost, repeated or out of order", i, e.Seq)
		}
	}
}

func TestArchive(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "archive")
	f.record(t, hourly(day0.Add(20*time.Hour), 72)...) // 20:00 on the 28th to 19:00 on the 1st
	before, _ := f.store.Stats()
	// The centre has acked the first 50; 51 and later are still in the outbox.
	if _, err := f.store.Acknowledge(1, 50); err != nil {
		t.Fatal(err)
	}
	cutoff := day0.Add(78*time.Hour + 30*time.Minute) // records 1..59 are older
	res, err := f.store.Archive(dir, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 50 || res.FirstSeq != 1 || res.LastSeq != 50 {
		t.Fatalf("archived %+v, want the 50 acked records", res)
	}
	want := []string{"journal-2026-11-28.jsonl.gz", "journal-2026-11-29.jsonl.gz", "journal-2026-11-30.jsonl.gz"}
	if len(res.Files) != 3 || res.Files[0] != want[0] || res.Files[2] != want[2] {
		t.Fatalf("files %v, want %v", res.Files, want)
	}
	for _, name := range want {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := f.store.Stats()
	if after.Journal != before.Journal-50 || after.Used != before.Used || after.LastSeq != before.LastSeq || after.Outbox != 22 {
		t.Fatalf("store after archiving: %+v, before %+v", after, before)
	}
	checkSequence(t, everything(t, f.store, dir), 72)

	// Acked later: archived up to the cutoff, the rest stays.
	if _, err := f.store.Acknowledge(51, 72); err != nil {
		t.Fatal(err)
	}
	if res, err = f.store.Archive(dir, cutoff); err != nil || res.Records != 9 {
		t.Fatalf("second run archived %+v, %v; want records 51-59", res, err)
	}
	if res, err = f.store.Archive(dir, cutoff); err != nil || res.Records != 0 {
		t.Fatalf("third run archived %+v, %v; want nothing", res, err)
	}
	checkSequence(t, everything(t, f.store, dir), 72)
	if s, _ := f.store.Stats(); s.Journal != 72-59 {
		t.Fatalf("%d records live, want 13", s.Journal)
	}

	// The next decision still gets the next sequence number.
	f.record(t, cutoff.Add(48*time.Hour))
	checkSequence(t, everything(t, f.store, dir), 73)
}

// TestArchiveInterrupted stops archive steps where a power cut could:
// after the day's file was written and fsync'd, before the records left
// the store, both on a file's first member and on a later one; and with a
// member torn half-way. Readers never see a record twice, and the next run
// cuts the uncounted tail off, so the file itself holds each record once.
func TestArchiveInterrupted(t *testing.T) {
	crash := errors.New("power cut")
	for _, tc := range []struct {
		name  string
		first time.Duration // archived before the interruption
		torn  bool
	}{
		{"first member of a day", 0, false},
		{"later member", 10 * time.Hour, false},
		{"torn member", 10 * time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			dir := filepath.Join(t.TempDir(), "archive")
			f.record(t, hourly(day0, 20)...)
			f.store.Acknowledge(1, 20)
			if _, err := f.store.Archive(dir, day0.Add(tc.first)); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, cache.ArchiveFileName(day0))
			if tc.torn {
				var member bytes.Buffer
				zw := gzip.NewWriter(&member)
				f.store.Journal(0, func(e cache.Decision) error { b, _ := jsonLine(e); zw.Write(b); return nil })
				zw.Close()
				fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				fh.Write(member.Bytes()[:member.Len()-4]) // longer than what the next run writes
				fh.Close()
			} else {
				cache.SetArchiveCrash(crash)
				_, err := f.store.Archive(dir, day0.Add(18*time.Hour)) // more than the next run will write
				cache.SetArchiveCrash(nil)
				if !errors.Is(err, crash) {
					t.Fatalf("interrupted run: %v", err)
				}
			}
			checkSequence(t, everything(t, f.store, dir), 20)
			if res, err := f.store.Archive(dir, day0.Add(16*time.Hour)); err != nil || res.Records != 16-int(tc.first/time.Hour) {
				t.Fatalf("run after the interruption: %+v, %v", res, err)
			}
			checkSequence(t, everything(t, f.store, dir), 20)
			if n := gzipLines(t, path); n != 16 {
				t.Fatalf("%s holds %d lines, want the 16 records archived", path, n)
			}
		})
	}
}

// gzipLines counts the lines of a whole gzip file, every member.
func gzipLines(t testing.TB, path string) int {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	zr, err := gzip.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return bytes.Count(b, []byte("\n"))
}

// A day file cut shorter than what was archived to it is refused rather
// than appended to, naming the file.
func TestArchiveFileCut(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Join(t.TempDir(), "archive")
	f.record(t, hourly(day0, 20)...)
	f.store.Acknowledge(1, 20)
	if _, err := f.store.Archive(dir, day0.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, cache.ArchiveFileName(day0))
	if err := os.Truncate(path, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Archive(dir, day0.Add(10*time.Hour)); err == nil || !bytes.Contains([]byte(err.Error()), []byte(path)) {
		t.Fatalf("archiving onto a cut file: %v", err)
	}
	if s, _ := f.store.Stats(); s.Journal != 15 {
		t.Fatalf("%d records live after the refusal, want 15", s.Journal)
	}
}

func TestCompact(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Dir(f.store.Path())
	f.record(t, hourly(day0, 3000)...)
	f.store.Acknowledge(1, 3000)
	if _, err := f.store.Archive(filepath.Join(dir, "archive"), day0.Add(2990*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Compact(dir, 50*time.Millisecond); !errors.Is(err, cache.ErrLocked) {
		t.Fatalf("compact while the store is open: %v, want ErrLocked", err)
	}
	// A snapshot staged and never swapped in (the link stopped mid-way).
	stg, err := f.store.StageSnapshot(f.snapshot(t, 9))
	if err != nil {
		t.Fatal(err)
	}
	if err := stg.Add(chunkOf(0, 5000)); err != nil {
		t.Fatal(err)
	}
	before, _ := f.store.Stats()
	f.store.Close()
	res, err := cache.Compact(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !res.DroppedStaging {
		t.Error("the staged snapshot was not reported dropped")
	}
	if res.After >= res.Before/2 {
		t.Fatalf("compacted %d -> %d bytes", res.Before, res.After)
	}
	s, err := cache.Open(dir, &cache.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	f.store = s
	if fi, err := os.Stat(f.store.Path()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("compacted store: %v, %v; want mode 0600", fi.Mode(), err)
	}
	t.Cleanup(func() { s.Close() })
	after, _ := s.Stats()
	if after != before {
		t.Fatalf("stats after compaction %+v, before %+v", after, before)
	}
	if found, _ := s.DropStaging(); found {
		t.Error("the staged snapshot survived compaction")
	}
	f.record(t, day0.Add(4000*time.Hour))
	checkSequence(t, everything(t, s, filepath.Join(dir, "archive")), 3001)
	if _, err := os.Stat(filepath.Join(dir, cache.FileName+".compact")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the copy was left beside the store: %v", err)
	}
}

func jsonLine(e cache.Decision) ([]byte, error) {
	b, err := json.Marshal(&e)
	return append(b, '\n'), err
}

// TestPruneUses: only the uses of tickets whose whitelist validity ended
// before the cutoff go; a ticket still valid, one without an end, and one
// missing from the whitelist keep theirs.
func TestPruneUses(t *testing.T) {
	f := newFixture(t)
	ended, valid, open, missing := bigTicket(1), bigTicket(2), bigTicket(3), bigTicket(4)
	ended.NotAfter, valid.NotAfter = day0, day0.Add(10*24*time.Hour)
	var chunk []byte
	for _, e := range []*verify.TicketEntry{&ended, &valid, &open} {
		chunk = cache.AppendTicketRecord(chunk, e)
	}
	// Enough other tickets that pruning takes several transactions.
	for i := range uint32(10000) {
		e := bigTicket(1000 + i)
		e.NotAfter = day0
		chunk = cache.AppendTicketRecord(chunk, &e)
	}
	if _, err := f.store.ApplySnapshot(f.snapshot(t, 8, chunk)); err != nil {
		t.Fatal(err)
	}
	ids := []verify.TicketID{ended.ID, valid.ID, open.ID, missing.ID}
	for i := range uint32(10000) {
		ids = append(ids, bigTicket(1000+i).ID)
	}
	uses := make([]verify.Use, len(ids))
	if _, err := f.store.MarkUsedBatch(ids, uses); err != nil {
		t.Fatal(err)
	}
	n, err := f.store.PruneUses(day0.Add(24 * time.Hour))
	if err != nil || n != 10001 {
		t.Fatalf("pruned %d, %v; want the 10001 uses of tickets that ended", n, err)
	}
	for _, tc := range []struct {
		id   verify.TicketID
		kept bool
	}{{ended.ID, false}, {valid.ID, true}, {open.ID, true}, {missing.ID, true}} {
		wrote, err := f.store.MarkUsed(tc.id, verify.Use{Gate: "probe"})
		if err != nil {
			t.Fatal(err)
		}
		if wrote == tc.kept {
			t.Errorf("ticket %s: use kept %v, want %v", tc.id, !wrote, tc.kept)
		}
	}
	if s, _ := f.store.Stats(); s.Used != 4 {
		t.Fatalf("%d uses left, want 4", s.Used)
	}
}

// FuzzArchivedJournal: an archive file is read back from a disk that may
// have damaged it; no content may panic the reader.
func FuzzArchivedJournal(f *testing.F) {
	fx := newFixture(f)
	dir := f.TempDir()
	var good bytes.Buffer
	zw := gzip.NewWriter(&good)
	zw.Write([]byte(`{"seq":1,"id":"a-1","at":"2026-11-28T10:00:00Z","gate":"g1","verdict":"admit","reason":"ok"}` + "\n"))
	zw.Close()
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:good.Len()/2])
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, cache.ArchiveFileName(day0)), b, 0o600); err != nil {
			t.Fatal(err)
		}
		fx.store.ArchivedJournal(dir, func(cache.Decision) error { return nil })
	})
}

// The copy keeps the store's owner: gated compact run as root must leave
// a file the gated user can open.
func TestCompactKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		testreq.Skipf(t, "needs root to give the store another owner")
	}
	f := newFixture(t)
	dir := filepath.Dir(f.store.Path())
	f.store.Close()
	if err := os.Chown(filepath.Join(dir, cache.FileName), 4321, 4322); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Compact(dir, 0); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, cache.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 4321 || st.Gid != 4322 {
		t.Fatalf("compacted store owned by %d:%d, want 4321:4322", st.Uid, st.Gid)
	}
}

// TestCompactDamaged damages each page of a real store in turn: compact
// never panics, and when it refuses, the store is left byte for byte.
func TestCompactDamaged(t *testing.T) {
	f := newFixture(t)
	dir := filepath.Dir(f.store.Path())
	f.record(t, hourly(day0, 300)...)
	f.store.Close()
	path := filepath.Join(dir, cache.FileName)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	refused := 0
	for p := 0; p < len(orig)/page; p++ {
		damaged := bytes.Clone(orig)
		for i := p * page; i < (p+1)*page; i++ {
			damaged[i] = byte(i*7 + p)
		}
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := cache.Compact(dir, 0); err != nil {
			refused++
			if now, _ := os.ReadFile(path); !bytes.Equal(now, damaged) {
				t.Errorf("page %d: compact refused (%v) but changed the store", p, err)
			}
		}
	}
	t.Logf("%d of %d damaged pages refused", refused, len(orig)/page)
	for _, size := range []int{0, 100, 2 * page, 3*page + 10} {
		if err := os.WriteFile(path, orig[:size], 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := cache.Compact(dir, 0)
		if err == nil {
			t.Errorf("a store cut to %d bytes was compacted", size)
		} else if size == 0 && !strings.Contains(err.Error(), "is empty, not a store") {
			t.Errorf("an empty store: %v, want it called empty", err)
		}
		if now, _ := os.ReadFile(path); !bytes.Equal(now, orig[:size]) {
			t.Errorf("a store cut to %d bytes was changed: now %d bytes", size, len(now))
		}
	}
}
