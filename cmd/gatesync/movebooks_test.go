package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/ingesttest"
	"github.com/gated-dev/gated/centre/pgstore"
	"github.com/gated-dev/gated/centre/sales"
	"github.com/gated-dev/gated/internal/cli"
	"github.com/gated-dev/gated/internal/pgtest"
	"github.com/gated-dev/gated/kv"
	"github.com/gated-dev/gated/kv/boltkv"
	"github.com/gated-dev/gated/kv/pgkv"
	"github.com/gated-dev/gated/verify"
	"github.com/gated-dev/gated/wire"
	"github.com/jackc/pgx/v5"
)

// gatesync runs the command line as main does, for its exit code and
// output.
func gatesync(t *testing.T, now func() time.Time, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e, now)
	return code, o.String(), e.String()
}

// moveCentre is a centre directory whose books (in central.db) hold two
// gates' entries: a duplicate, a conflict, a re-entry and a gate known
// only by its heartbeat.
type moveCentre struct {
	dir                string
	now                func() time.Time
	reentry            verify.TicketID
	batches            []*wire.ParsedBatch
	entries            []centre.Record
	conflicts          []centre.Conflict
	gates              []centre.GateState
	firstPage, nextPag []byte
	sales              string // dump of the sales books
}

func newMoveCentre(t *testing.T) *moveCentre {
	t.Helper()
	// Nanoseconds: PostgreSQL keeps received times to the microsecond.
	clock := time.Date(2026, 11, 23, 17, 0, 0, 123456789, time.UTC)
	m := &moveCentre{dir: t.TempDir(), now: func() time.Time { clock = clock.Add(time.Second + time.Nanosecond); return clock }}
	if code, _, stderr := gatesync(t, m.now, "init", "--dir", m.dir); code != 0 {
		t.Fatalf("init: %s", stderr)
	}
	c, err := centre.Open(m.dir, m.now)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	codes := map[verify.TicketID]string{} // admissions carry the scanned code
	tk := func(reentry bool) verify.TicketID {
		ts, err := c.Issue(centre.IssueRequest{Event: "E", Count: 1, Reentry: reentry})
		if err != nil {
			t.Fatal(err)
		}
		codes[ts[0].ID] = ts[0].Code()
		return ts[0].ID
	}
	a, b := tk(false), tk(false)
	m.reentry = tk(true)
	m.batches = []*wire.ParsedBatch{
		ingesttest.WithCode(ingesttest.Batch(t, "g1", "i1", a, "admit", "ok", 1), codes[a]),
		ingesttest.Batch(t, "g1", "i1", b, "deny", "revoked", 2, 3),
		ingesttest.WithCode(ingesttest.Batch(t, "g2", "i2", a, "admit", "ok", 1), codes[a]), // a at two gates: a conflict
		ingesttest.Batch(t, "g1", "i1", b, "deny", "revoked", 2, 3),
		ingesttest.WithCode(ingesttest.Batch(t, "g2", "i2", m.reentry, "admit", "ok", 2), codes[m.reentry]),
		ingesttest.WithCode(ingesttest.Batch(t, "g1", "i1", m.reentry, "admit", "ok", 4), codes[m.reentry]), // re-entry: no conflict
		ingesttest.Batch(t, "g1", "i1", b, "deny", "revoked", 6),                                            // a gap at 5
	}
	var n, dup, cf int
	for _, bt := range m.batches {
		res, err := c.Ingest("v", bt)
		if err != nil {
			t.Fatal(err)
		}
		n, dup, cf = n+res.New, dup+res.Duplicate, cf+len(res.Conflicts)
	}
	if n != 7 || dup != 2 || cf != 1 {
		t.Fatalf("bbolt books: %d new, %d duplicates, %d conflicts; want 7, 2, 1", n, dup, cf)
	}
	if err := c.GateStatus("v", &wire.Status{V: wire.Version, Gate: "g3", Online: true, Outbox: 4}); err != nil {
		t.Fatal(err)
	}
	if m.entries, err = c.Entries(0, 100); err != nil {
		t.Fatal(err)
	}
	for i := range m.entries { // what PostgreSQL keeps
		m.entries[i].ReceivedAt = m.entries[i].ReceivedAt.Truncate(time.Microsecond)
	}
	if m.conflicts, err = c.Conflicts(); err != nil {
		t.Fatal(err)
	}
	if m.gates, err = c.Gates(); err != nil {
		t.Fatal(err)
	}
	if len(m.gates) != 3 || len(m.conflicts) != 1 {
		t.Fatalf("bbolt books: %d gates, %d conflicts", len(m.gates), len(m.conflicts))
	}
	m.firstPage, m.nextPag = apiPages(t, c, m.dir)

	// Sales books: keys of every kind in several buckets, more than one
	// copy batch of them in one.
	sdb, err := boltkv.Open(filepath.Join(m.dir, "sales.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	if err := sdb.Update(context.Background(), func(tx kv.Tx) error {
		for i := range 2500 {
			if err := tx.Put("tickets", fmt.Appendf(nil, "t%05d", i), fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
				return err
			}
		}
		for _, kvs := range [][3]string{{"stock", "E\x00std\x00a", "\x00\x00\x00\x00\x00\x00\x00\x07"}, {"holds", "\xff\xff\x00o1", ""},
			{"orders", "o1", `{"state":"held"}`}, {"userorders", "openid\x00o1", ""}, {"pending", "\x00", ""}} {
			if err := tx.Put(kvs[0], []byte(kvs[1]), []byte(kvs[2])); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m.sales = dumpSales(t, sdb)
	return m
}

// dumpSales lists every key and value of the sales buckets.
func dumpSales(t *testing.T, db kv.DB) string {
	t.Helper()
	var b strings.Builder
	if err := db.View(context.Background(), func(tx kv.Tx) error {
		b.Reset()
		for _, bk := range sales.Buckets {
			if err := tx.Scan(bk, nil, nil, func(k, v []byte) error {
				fmt.Fprintf(&b, "%s %q %q\n", bk, k, v)
				return nil
			}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// apiPages pages GET /api/v1/entries three records at a time and returns
// the record numbers and ids of the first page and of the pages after it.
func apiPages(t *testing.T, c *centre.Centre, dir string) (first, rest []byte) {
	t.Helper()
	token, err := centre.ReadAPIToken(dir)
	if err != nil {
		t.Fatal(err)
	}
	api := centre.NewAPI(c, token, nil)
	var out [][]string
	for since, i := uint64(0), 0; i < 10; i++ {
		req := httptest.NewRequest(http.MethodGet, fmt.Sprintf("/api/v1/entries?since=%d&limit=3", since), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		var p centre.EntriesPage
		if err := json.Unmarshal(rec.Body.Bytes(), &p); rec.Code != http.StatusOK || err != nil {
			t.Fatalf("GET entries: %d %s", rec.Code, rec.Body)
		}
		page := []string{fmt.Sprint("next=", p.Next)}
		for _, r := range p.Entries {
			page = append(page, fmt.Sprint(r.N, " ", r.ID, " ", r.Gate))
		}
		out = append(out, page)
		if len(p.Entries) == 0 {
			break
		}
		since = p.Next
	}
	f, _ := json.Marshal(out[0])
	r, _ := json.Marshal(out[1:])
	return f, r
}

// TestMoveBooks moves a centre's books into PostgreSQL with gatesync
// move-books and checks them there through the IngestStore: the same
// records with the same numbers, conflicts, gate states and re-entry
// tickets; a gate's resent batches are duplicates; the entries API pages
// the same records. A running serve, a second move and a missing --to are
// refused.
func TestMoveBooks(t *testing.T) {
	t.Setenv("GATESYNC_STORE", "")
	t.Setenv("GATESYNC_SALES_STORE", "")
	if code, _, stderr := gatesync(t, time.Now, "move-books", "--dir", t.TempDir()); code != 2 || !strings.Contains(stderr, "--to postgres://USER@HOST/DB is required") {
		t.Errorf("no --to: exit %d, %q; want 2", code, stderr)
	}
	if code, _, stderr := gatesync(t, time.Now, "move-books", "--dir", t.TempDir(), "--to", "mysql://u:secret@h/db"); code != 2 || strings.Contains(stderr, "secret") {
		t.Errorf("--to mysql: exit %d, %q; want 2 and no password", code, stderr)
	}

	cl := pgtest.Start(t, pgtest.Options{})
	url := cl.Database(t, "books")
	m := newMoveCentre(t)

	// A serve holding central.db: refused, nothing moved.
	held, err := centre.Open(m.dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr := gatesync(t, m.now, "move-books", "--dir", m.dir, "--to", url)
	held.Close()
	if code != 1 || !strings.Contains(stderr, "stop gatesync serve first") {
		t.Errorf("while serve runs: exit %d, %q; want 1, stop gatesync serve first", code, stderr)
	}

	// Sales books in PostgreSQL already: refused, nothing moved.
	full := cl.Database(t, "salesfull")
	sdb, err := pgkv.Open(context.Background(), full, pgkv.Options{Table: sales.PostgresTable})
	if err != nil {
		t.Fatal(err)
	}
	if err := sdb.Update(context.Background(), func(tx kv.Tx) error { return tx.Put("orders", []byte("o9"), []byte("{}")) }); err != nil {
		t.Fatal(err)
	}
	sdb.Close()
	code, _, stderr = gatesync(t, m.now, "move-books", "--dir", m.dir, "--to", full)
	if code != 1 || !strings.Contains(stderr, "sales books in PostgreSQL are not empty: table gatesync_sales holds 1 keys") {
		t.Errorf("sales books not empty: exit %d, %q; want 1, not empty", code, stderr)
	}
	checkEmpty(t, full)

	// A move that fails half-way (here the books of entries, after the
	// sales books were copied) leaves nothing behind, and can be run again.
	pg, err := pgstore.Open(context.Background(), url, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	sql(t, url, `CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$;
		CREATE TRIGGER boom BEFORE INSERT ON conflicts FOR EACH STATEMENT EXECUTE FUNCTION boom()`)
	code, _, stderr = gatesync(t, m.now, "move-books", "--dir", m.dir, "--to", url)
	if code != 1 || !strings.Contains(stderr, "disk on fire") || !strings.Contains(stderr, "nothing was moved") {
		t.Errorf("failing move: exit %d, %q; want 1, nothing was moved", code, stderr)
	}
	t.Logf("failing move: %s", stderr)
	checkEmpty(t, url)
	sql(t, url, `DROP TRIGGER boom ON conflicts`)

	code, stdout, stderr := gatesync(t, m.now, "move-books", "--dir", m.dir, "--to", url)
	if code != 0 {
		t.Fatalf("move-books: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("move-books:\n%s", stdout)
	for _, want := range []string{"7 entries (record numbers up to 7), 3 gates, 1 conflicts", "1 re-entry tickets",
		"sales books (" + filepath.Join(m.dir, "sales.db") + "): 2505 keys, into table gatesync_sales", "gatesync serve --dir " + m.dir + " --store 'postgres://postgres@127.0.0.1:"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("move-books printed no %q", want)
		}
	}

	if es, err := pg.Entries(0, 100); err != nil || !reflect.DeepEqual(es, m.entries) {
		t.Errorf("records in PostgreSQL (%v):\n%+v\nwant\n%+v", err, es, m.entries)
	}
	if cs, err := pg.Conflicts(); err != nil || !reflect.DeepEqual(cs, m.conflicts) {
		t.Errorf("conflicts in PostgreSQL (%v):\n%+v\nwant\n%+v", err, cs, m.conflicts)
	}
	if gs, err := pg.Gates(); err != nil || !reflect.DeepEqual(gs, m.gates) {
		t.Errorf("gates in PostgreSQL (%v):\n%+v\nwant\n%+v", err, gs, m.gates)
	}
	if re, err := pg.Reentry([]verify.TicketID{m.reentry}); err != nil || !re[m.reentry] {
		t.Errorf("re-entry ticket not in PostgreSQL: %v %v", re, err)
	}

	sdb, err = pgkv.Open(context.Background(), url, pgkv.Options{Table: sales.PostgresTable})
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	if got := dumpSales(t, sdb); got != m.sales {
		t.Errorf("sales books in PostgreSQL differ from sales.db:\n%.2000s\nwant\n%.2000s", got, m.sales)
	}

	// The centre on PostgreSQL: the same pages; every batch the gates
	// resend is a duplicate; new entries number on.
	c, err := centre.Open(m.dir, m.now)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetIngestStore(pg)
	if first, rest := apiPages(t, c, m.dir); !bytes.Equal(first, m.firstPage) || !bytes.Equal(rest, m.nextPag) {
		t.Errorf("entries API on PostgreSQL:\n%s %s\nwant\n%s %s", first, rest, m.firstPage, m.nextPag)
	}
	for _, bt := range m.batches {
		res, err := c.Ingest("v", bt)
		if err != nil {
			t.Fatal(err)
		}
		if res.New != 0 || len(res.Conflicts) != 0 || res.Duplicate != len(bt.Parsed) {
			t.Errorf("resent batch %s/%s %d-%d: %+v; want all duplicates", bt.Gate, bt.Instance, bt.First, bt.Last, res)
		}
	}
	res, err := c.Ingest("v", ingesttest.WithCode(ingesttest.Batch(t, "g1", "i1", m.reentry, "admit", "ok", 5), m.batches[4].Parsed[0].Code))
	if err != nil || res.New != 1 || res.StoredTo != 6 || len(res.Conflicts) != 0 {
		t.Errorf("a new entry after the move: %+v, %v; want new, stored to 6, a re-entry", res, err)
	}
	if es, _ := pg.Entries(7, 10); len(es) != 1 || es[0].N != 8 {
		t.Errorf("the new entry: %+v; want record 8", es)
	}

	// Once only: the books in PostgreSQL are not empty now (GATESYNC_STORE
	// stands for --to).
	c.Close()
	t.Setenv("GATESYNC_STORE", url)
	code, stdout, stderr = gatesync(t, m.now, "move-books", "--dir", m.dir)
	if code != 1 || !strings.Contains(stderr, "not empty: they hold 8 entries, 3 gates, 1 conflicts") {
		t.Errorf("second move: exit %d, %q %q; want 1, not empty", code, stdout, stderr)
	}
}

// sql runs statements on the database at url.
func sql(t *testing.T, url, stmt string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), stmt); err != nil {
		t.Fatal(err)
	}
}

// checkEmpty fails unless the books at url hold no entries and no sales
// keys.
func checkEmpty(t *testing.T, url string) {
	t.Helper()
	pg, err := pgstore.Open(context.Background(), url, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	if err := pg.CheckEmpty(context.Background()); err != nil {
		t.Errorf("books of entries: %v", err)
	}
	var n int
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM `+sales.PostgresTable+` WHERE bucket <> 'orders' OR k <> 'o9'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d sales keys left in %s", n, sales.PostgresTable)
	}
}

// TestMoveBooksSalesSource: where move-books finds the sales books.
func TestMoveBooksSalesSource(t *testing.T) {
	t.Setenv("GATESYNC_SALES_STORE", "")
	dir := t.TempDir()
	conf := func(store string) string {
		p := filepath.Join(t.TempDir(), "sales.json")
		b, _ := json.Marshal(map[string]string{"appid": "wx1", "mchid": "1", "store": store})
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, f := range []string{"sales.db", "shop.db"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		config, db string
		want       salesBooks
	}{
		{"", "", salesBooks{path: filepath.Join(dir, "sales.db")}},
		{conf(""), "", salesBooks{path: filepath.Join(dir, "sales.db")}},
		{conf("shop.db"), "", salesBooks{path: filepath.Join(dir, "shop.db"), ownStore: "shop.db"}},
		{conf("postgres://h/db"), "", salesBooks{note: "in PostgreSQL already"}},
		{conf("none.db"), "", salesBooks{note: "there is no " + filepath.Join(dir, "none.db"), ownStore: "none.db"}},
		{"", filepath.Join(dir, "shop.db"), salesBooks{path: filepath.Join(dir, "shop.db")}},
	} {
		got, err := salesSource(dir, tc.config, tc.db)
		if err != nil || got.path != tc.want.path || got.ownStore != tc.want.ownStore || !strings.Contains(got.note, tc.want.note) || (tc.want.note == "") != (got.note == "") {
			t.Errorf("--sales %q --sales-db %q: %+v, %v; want %+v", tc.config, tc.db, got, err, tc.want)
		}
	}
	t.Setenv("GATESYNC_SALES_STORE", "shop.db")
	if got, err := salesSource(dir, conf("sales.db"), ""); err != nil || got.path != filepath.Join(dir, "shop.db") || got.ownStore != "" {
		t.Errorf("GATESYNC_SALES_STORE=shop.db: %+v, %v; want shop.db", got, err)
	}
	t.Setenv("GATESYNC_SALES_STORE", "postgres://h/db")
	if got, err := salesSource(dir, "", ""); err != nil || got.path != "" || !strings.Contains(got.note, "in PostgreSQL already") {
		t.Errorf("GATESYNC_SALES_STORE=postgres://: %+v, %v; want none", got, err)
	}
	t.Setenv("GATESYNC_SALES_STORE", "")
	empty := t.TempDir()
	if got, err := salesSource(empty, "", ""); err != nil || got.path != "" || !strings.Contains(got.note, "no sales on this centre") {
		t.Errorf("no sales.db: %+v, %v", got, err)
	}
	var u *cli.UsageError
	for _, args := range [][2]string{{conf(""), filepath.Join(dir, "shop.db")}, {"", filepath.Join(dir, "missing.db")}, {filepath.Join(dir, "missing.json"), ""}} {
		if _, err := salesSource(dir, args[0], args[1]); !errors.As(err, &u) {
			t.Errorf("--sales %q --sales-db %q: %v; want a usage error", args[0], args[1], err)
		}
	}
}
