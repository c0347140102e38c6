package main

import (
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
	"github.com/gated-dev/gated/internal/cli"
)

// moveChunk is how many records move-books reads and inserts at a time.
const moveChunk = 5000

// cmdMoveBooks moves a centre's books from bbolt to PostgreSQL, once,
// before gatesync serve --store postgres://... is switched on: the books
// of entries in DIR/central.db into the pgstore tables (docs/scaleout.md).
func cmdMoveBooks(args []string, stdout io.Writer, now func() time.Time) error {
	fs, dir := flags("move-books")
	to := fs.String("to", "", "the PostgreSQL database to move the books into, postgres://USER@HOST/DB (default: GATESYNC_STORE); its books must be empty")
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	start := time.Now()

	// central.db stays open, locked, until the move is done: no serve can
	// start on DIR meanwhile and write to the books being moved.
	c, err := open(*dir, now)
	if errors.Is(err, centre.ErrInUse) {
		return fmt.Errorf("%s is held open by a running gatesync serve: stop gatesync serve first, then move the books", filepath.Join(*dir, centre.DBFile))
	}
	if err != nil {
		return err
	}
	defer c.Close()
	pg, err := pgstore.Open(ctx, *to, pgstore.Options{})
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	defer pg.Close()
	if err := pg.CheckEmpty(ctx); err != nil {
		return notEmpty(err)
	}
	st, err := pg.Import(ctx, func(put func(*centre.Books) error) error { return c.ExportBooks(moveChunk, put) })
	if err != nil {
		return notEmpty(err)
	}
	took := time.Since(start)
	fmt.Fprintf(stdout, "moved the books of entries from %s to %s in %s:\n", filepath.Join(*dir, centre.DBFile), redactURL(*to), took.Round(time.Millisecond))
	fmt.Fprintf(stdout, "  %d entries (record numbers up to %d), %d gates, %d conflicts, %d gate streams, %d first admissions, %d re-entry tickets\n",
		st.Entries, st.LastN, st.Gates, st.Conflicts, st.Streams, st.Uses, st.Reentry)
	fmt.Fprintf(stdout, "central.db keeps its copy, which goes stale from now on. Start gatesync against PostgreSQL with:\n")
	fmt.Fprintf(stdout, "  gatesync serve --dir %s --store %s\n", shellQuote(*dir), shellQuote(redactURL(*to)))
	if u, err := url.Parse(*to); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			fmt.Fprintf(stdout, "with the password of --to in place of xxxxx (or the URL in GATESYNC_STORE instead of --store)\n")
		}
	}
	return nil
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

// notEmpty turns the refusal of books that are not empty into a message
// for the operator.
func notEmpty(err error) error {
	if errors.Is(err, pgstore.ErrNotEmpty) {
		return fmt.Errorf("%w; move-books moves into empty books only, once (nothing was moved)", err)
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
