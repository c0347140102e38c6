package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gated-dev/gated/centre"
	"github.com/gated-dev/gated/centre/pgstore"
	"github.com/gated-dev/gated/centre/sales"
	"github.com/gated-dev/gated/internal/cli"
	"github.com/gated-dev/gated/kv"
	"github.com/gated-dev/gated/kv/boltkv"
	"github.com/gated-dev/gated/kv/pgkv"
)

// moveChunk is how many records move-books reads and inserts at a time.
const moveChunk = 5000

// cmdMoveBooks moves a centre's books from bbolt to PostgreSQL, once,
// before gatesync serve --store postgres://... is switched on: the books
// of entries in DIR/central.db into the pgstore tables, and the sales
// books (DIR/sales.db or the file the sales configuration names) into the
// table sales.PostgresTable (docs/scaleout.md).
//
// Nothing is moved unless both are empty in PostgreSQL. The sales books
// are copied first, then the books of entries in one transaction; when
// either fails, the sales keys copied are deleted again, so a failed move
// leaves PostgreSQL as it found it and can be run again.
func cmdMoveBooks(args []string, stdout io.Writer, now func() time.Time) error {
	fs, dir := flags("move-books")
	to := fs.String("to", "", "the PostgreSQL database to move the books into, postgres://USER@HOST/DB (default: GATESYNC_STORE); its books must be empty")
	salesConfig := fs.String("sales", "", "the sales configuration file (JSON) of serve --sales-config: its store names the sales books to move (default: DIR/sales.db, when there is one)")
	salesDB := fs.String("sales-db", "", "the sales books to move, a bbolt file (instead of --sales)")
	if err := parse(fs, dir, args); err != nil {
		return err
	}
	if *to == "" {
		*to = os.Getenv("GATESYNC_STORE")
	}
	if *to == "" {
		return cli.Usagef("--to postgres://USER@HOST/DB is required (or GATESYNC_STORE)")
	}
	if !isPostgres(*to) {
		return cli.Usagef("--to %q: use a URL like postgres://gatesync@db.example/gatesync", redactURL(*to))
	}
	src, err := salesSource(*dir, *salesConfig, *salesDB)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	start := time.Now()

	// central.db and sales.db stay open, locked, until the move is done:
	// no serve can start on DIR meanwhile and write to the books.
	c, err := open(*dir, now)
	if errors.Is(err, centre.ErrInUse) {
		return fmt.Errorf("%s is held open by a running gatesync serve: stop gatesync serve first, then move the books", filepath.Join(*dir, centre.DBFile))
	}
	if err != nil {
		return err
	}
	defer c.Close()
	var salesFrom *boltkv.DB
	if src.path != "" {
		if salesFrom, err = boltkv.Open(src.path); err != nil {
			return fmt.Errorf("sales books: %w: stop gatesync serve first, then move the books", err)
		}
		defer salesFrom.Close()
	}

	pg, err := pgstore.Open(ctx, *to, pgstore.Options{})
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	defer pg.Close()
	if err := pg.CheckEmpty(ctx); err != nil {
		return fmt.Errorf("%w (nothing was moved)", notEmpty(err))
	}
	var salesTo *pgkv.DB
	if salesFrom != nil {
		if salesTo, err = pgkv.Open(ctx, *to, pgkv.Options{Table: sales.PostgresTable}); err != nil {
			return fmt.Errorf("--to: sales books: %w", err)
		}
		defer salesTo.Close()
		n, err := countKeys(ctx, salesTo, sales.Buckets)
		if err != nil {
			return fmt.Errorf("--to: sales books: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("the sales books in PostgreSQL are not empty: table %s holds %d keys; move-books moves into empty books only, once (nothing was moved)", sales.PostgresTable, n)
		}
	}

	salesKeys := 0
	if salesTo != nil {
		if salesKeys, err = kv.Copy(ctx, salesTo, salesFrom, sales.Buckets, 0); err != nil {
			return undoSales(ctx, salesTo, fmt.Errorf("copying the sales books: %w", err))
		}
	}
	st, err := pg.Import(ctx, func(put func(*centre.Books) error) error { return c.ExportBooks(moveChunk, put) })
	if err != nil {
		return undoSales(ctx, salesTo, notEmpty(err))
	}
	took := time.Since(start)

	fmt.Fprintf(stdout, "moved the books from %s to %s in %s:\n", *dir, redactURL(*to), took.Round(time.Millisecond))
	fmt.Fprintf(stdout, "  books of entries (%s): %d entries (record numbers up to %d), %d gates, %d conflicts,\n",
		centre.DBFile, st.Entries, st.LastN, st.Gates, st.Conflicts)
	fmt.Fprintf(stdout, "    %d gate streams, %d first admissions, %d re-entry tickets\n", st.Streams, st.Uses, st.Reentry)
	if salesTo != nil {
		fmt.Fprintf(stdout, "  sales books (%s): %d keys, into table %s\n", src.path, salesKeys, sales.PostgresTable)
	} else {
		fmt.Fprintf(stdout, "  sales books: %s\n", src.note)
	}
	fmt.Fprintf(stdout, "The bbolt files keep their copies, stale from now on. Start gatesync on PostgreSQL (with its other flags as before):\n")
	cmd := fmt.Sprintf("  gatesync serve --dir %s --store %s", shellQuote(*dir), shellQuote(redactURL(*to)))
	if *salesConfig != "" {
		cmd += " --sales-config " + shellQuote(*salesConfig)
	}
	fmt.Fprintln(stdout, cmd)
	if u, err := url.Parse(*to); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			fmt.Fprintf(stdout, "with the password of --to in place of xxxxx (or the URL in GATESYNC_STORE instead of --store)\n")
		}
	}
	if src.ownStore != "" && salesTo != nil {
		fmt.Fprintf(stdout, "and remove \"store\": %q from %s: a sales configuration that names a store of its own keeps selling from it\n", src.ownStore, *salesConfig)
	}
	return nil
}

// salesBooks is where move-books takes the sales books from.
type salesBooks struct {
	path     string // the bbolt file; "" for none to move
	note     string // why there is none
	ownStore string // the store the sales configuration names, if any
}

// salesSource finds the sales books: --sales-db, else where serve
// --sales-config keeps them: GATESYNC_SALES_STORE, else the store of the
// --sales configuration, else DIR/sales.db.
func salesSource(dir, config, db string) (salesBooks, error) {
	if config != "" && db != "" {
		return salesBooks{}, cli.Usagef("--sales and --sales-db: give one (--sales-db names the file --sales would read from the configuration)")
	}
	if db != "" {
		if _, err := os.Stat(db); err != nil {
			return salesBooks{}, cli.Usagef("--sales-db: %v", err)
		}
		return salesBooks{path: db}, nil
	}
	var sb salesBooks
	store := ""
	if config != "" {
		fc, err := sales.LoadFileConfig(config)
		if err != nil {
			return sb, cli.Usagef("--sales: %v", err)
		}
		store, sb.ownStore = fc.Store, fc.Store
	}
	if env := os.Getenv("GATESYNC_SALES_STORE"); env != "" { // it wins in serve too
		store, sb.ownStore = env, ""
	}
	if sales.IsPostgres(store) {
		return salesBooks{note: "none moved: they are in PostgreSQL already (the sales configuration or GATESYNC_SALES_STORE says so)"}, nil
	}
	path := store
	if path == "" {
		path = "sales.db"
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		sb.note = fmt.Sprintf("none moved: there is no %s (no sales on this centre)", path)
		return sb, nil
	} else if err != nil {
		return sb, err
	}
	sb.path = path
	return sb, nil
}

// countKeys counts the keys of the buckets.
func countKeys(ctx context.Context, db kv.DB, buckets []string) (int, error) {
	n := 0
	err := db.View(ctx, func(tx kv.Tx) error {
		n = 0
		for _, b := range buckets {
			if err := tx.Scan(b, nil, nil, func(_, _ []byte) error { n++; return nil }); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// undoSales deletes the sales keys a failed move copied (the table held
// none before), and returns the move's error, saying what is left.
func undoSales(ctx context.Context, db kv.DB, err error) error {
	if db == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	for _, b := range sales.Buckets {
		for {
			var keys [][]byte
			if verr := db.View(ctx, func(tx kv.Tx) error {
				keys = nil
				return tx.Scan(b, nil, nil, func(k, _ []byte) error {
					if keys = append(keys, bytes.Clone(k)); len(keys) == 1000 {
						return kv.Stop
					}
					return nil
				})
			}); verr != nil {
				return fmt.Errorf("%w; deleting the sales keys copied failed too (%v): empty table %s before moving again", err, verr, sales.PostgresTable)
			}
			if len(keys) == 0 {
				break
			}
			if derr := db.Update(ctx, func(tx kv.Tx) error {
				for _, k := range keys {
					if err := tx.Delete(b, k); err != nil {
						return err
					}
				}
				return nil
			}); derr != nil {
				return fmt.Errorf("%w; deleting the sales keys copied failed too (%v): empty table %s before moving again", err, derr, sales.PostgresTable)
			}
		}
	}
	return fmt.Errorf("%w (nothing was moved)", err)
}

// notEmpty turns the refusal of books that are not empty into a message
// for the operator.
func notEmpty(err error) error {
	if errors.Is(err, pgstore.ErrNotEmpty) {
		return fmt.Errorf("%w; move-books moves into empty books only, once", err)
	}
	return err
}

// redactURL hides the password of a database URL for printing.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(a malformed URL)"
	}
	return u.Redacted()
}

// shellQuote quotes s for a shell command line when it needs it.
func shellQuote(s string) string {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r)) {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}
