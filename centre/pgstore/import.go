package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/gated-dev/gated/centre"
	"github.com/jackc/pgx/v5"
)

// errStopExport stops an export whose chunks can no longer be stored.
var errStopExport = errors.New("import failed")

// ErrNotEmpty is returned by Import when the books already hold records.
var ErrNotEmpty = errors.New("the books in PostgreSQL are not empty")

// Imported counts what Import stored.
type Imported struct {
	Entries, Streams, Uses, Conflicts, Gates, Reentry, UseLog, Alerts int
	// LastN is the highest record number the books hold after the import;
	// the next entry ingested gets a higher one.
	LastN uint64
}

// Import loads books that another store exports (centre.BoltIngest's
// Export, centre.Centre's ExportBooks) into these, which must hold no
// entry, stream, first admission, conflict or gate state (re-entry
// tickets may be there already: a primary shares them on start). export
// is called once and calls put with each chunk in turn; the chunk is
// stored while export reads the next, so export must not change a chunk
// after giving it to put.
//
// Everything is stored in one transaction, committed when export returns
// nil: on any error the books are left as they were, so a failed move can
// simply be run again. The tables are locked meanwhile (an instance
// already serving these books waits, and finds them filled). Each row goes
// in under the same constraints as ingest, keeping its number: records
// and conflicts keep N, so paging by N goes on where the old store left
// off, and the counters are advanced past the highest number imported.
// Received times are kept to the microsecond, PostgreSQL's precision.
func (s *Store) Import(ctx context.Context, export func(put func(*centre.Books) error) error) (Imported, error) {
	var st Imported
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		st = Imported{}
		if _, err := tx.Exec(ctx, `LOCK TABLE ingest_counters, streams, entries, uses, conflicts, gates, reentry_tickets, use_log, use_heads, alerts IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		if err := checkEmpty(ctx, tx); err != nil {
			return err
		}
		// The export reads the next chunk while the last one is inserted.
		var entrySeq, conflictSeq uint64
		chunks, failed, done := make(chan *centre.Books, 1), make(chan struct{}), make(chan error, 1)
		go func() {
			var err error
			for b := range chunks {
				if err == nil {
					entrySeq, conflictSeq = max(entrySeq, b.EntrySeq), max(conflictSeq, b.ConflictSeq)
					if err = importChunk(ctx, tx, b, &st); err != nil {
						close(failed)
					}
				}
			}
			done <- err
		}()
		errExport := export(func(b *centre.Books) error {
			select {
			case chunks <- b:
				return nil
			case <-failed:
				return errStopExport
			}
		})
		close(chunks)
		if err := <-done; err != nil {
			return err
		}
		if errExport != nil {
			return errExport
		}
		var last int64
		if err := tx.QueryRow(ctx, `UPDATE ingest_counters SET value = greatest(value, $1, (SELECT coalesce(max(n), 0) FROM entries))
			WHERE name = 'entries' RETURNING value`, int64(entrySeq)).Scan(&last); err != nil {
			return err
		}
		st.LastN = uint64(last)
		if _, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('alerts', 'n'), m)
			FROM (SELECT coalesce(max(n), 0) AS m FROM alerts) x WHERE m > 0`); err != nil {
			return err
		}
		// Each event's log goes on from its highest number.
		if _, err := tx.Exec(ctx, `INSERT INTO use_heads (event, head) SELECT event, max(n) FROM use_log GROUP BY event
			ON CONFLICT (event) DO UPDATE SET head = greatest(use_heads.head, excluded.head)`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT setval(pg_get_serial_sequence('conflicts', 'n'), m)
			FROM (SELECT greatest($1, coalesce(max(n), 0)) AS m FROM conflicts) x WHERE m > 0`, int64(conflictSeq))
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotEmpty) {
			return Imported{}, err
		}
		return Imported{}, fmt.Errorf("postgres import: %w", err)
	}
	return st, nil
}

// CheckEmpty returns nil when the books hold no entry, stream, first
// admission, conflict or gate state (what Import requires), and
// ErrNotEmpty saying what they hold otherwise.
func (s *Store) CheckEmpty(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return checkEmpty(ctx, tx) })
}

// checkEmpty fails with ErrNotEmpty, saying what is there, unless the
// books hold nothing.
func checkEmpty(ctx context.Context, tx pgx.Tx) error {
	var have []string
	for _, t := range []struct{ table, what string }{
		{"entries", "entries"}, {"gates", "gates"}, {"conflicts", "conflicts"}, {"streams", "gate streams"}, {"uses", "first admissions"},
		{"use_log", "logged uses"}, {"alerts", "alerts"},
	} {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+t.table).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			have = append(have, fmt.Sprintf("%d %s", n, t.what))
		}
	}
	if len(have) > 0 {
		return fmt.Errorf("%w: they hold %s", ErrNotEmpty, strings.Join(have, ", "))
	}
	return nil
}

func importChunk(ctx context.Context, tx pgx.Tx, b *centre.Books, st *Imported) error {
	if k := len(b.Entries); k > 0 {
		// COPY: the same constraints as an INSERT, a few times faster.
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"entries"},
			[]string{"n", "venue", "gate", "instance", "seq", "id", "received_at", "clock_offset_ms", "entry"},
			pgx.CopyFromSlice(k, func(i int) ([]any, error) {
				e := &b.Entries[i]
				return []any{int64(e.N), e.Venue, e.Gate, e.Instance, int64(e.Seq), e.ID, e.ReceivedAt, e.ClockOffsetMs, e.Entry}, nil
			}))
		if err != nil {
			return fmt.Errorf("entries: %w", err)
		}
		st.Entries += k
	}
	if k := len(b.Streams); k > 0 {
		gates, insts, to := make([]string, k), make([]string, k), make([]int64, k)
		for i, x := range b.Streams {
			gates[i], insts[i], to[i] = x.Gate, x.Instance, int64(x.StoredTo)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO streams (gate, instance, stored_to) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])`,
			gates, insts, to); err != nil {
			return fmt.Errorf("streams: %w", err)
		}
		st.Streams += k
	}
	if k := len(b.Uses); k > 0 {
		tickets, docs := make([][]byte, k), make([]string, k)
		for i, u := range b.Uses {
			doc, err := json.Marshal(u.First)
			if err != nil {
				return err
			}
			tickets[i], docs[i] = u.Ticket[:], string(doc)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO uses (ticket, first) SELECT t, f::json FROM unnest($1::bytea[], $2::text[]) AS x(t, f)`,
			tickets, docs); err != nil {
			return fmt.Errorf("first admissions: %w", err)
		}
		st.Uses += k
	}
	if k := len(b.Conflicts); k > 0 {
		ns, docs := make([]int64, k), make([]string, k)
		for i, cf := range b.Conflicts {
			doc, err := json.Marshal(cf)
			if err != nil {
				return err
			}
			ns[i], docs[i] = int64(cf.N), string(doc)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO conflicts (n, doc) SELECT n, d::json FROM unnest($1::bigint[], $2::text[]) AS x(n, d)`,
			ns, docs); err != nil {
			return fmt.Errorf("conflicts: %w", err)
		}
		st.Conflicts += k
	}
	if k := len(b.Gates); k > 0 {
		venues, gates, docs := make([]string, k), make([]string, k), make([]string, k)
		for i, g := range b.Gates {
			doc, err := json.Marshal(g)
			if err != nil {
				return err
			}
			venues[i], gates[i], docs[i] = g.Venue, g.Gate, string(doc)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO gates (venue, gate, state) SELECT v, g, s::json FROM unnest($1::text[], $2::text[], $3::text[]) AS x(v, g, s)`,
			venues, gates, docs); err != nil {
			return fmt.Errorf("gate states: %w", err)
		}
		st.Gates += k
	}
	if k := len(b.UseLog); k > 0 {
		evs, ns, docs := make([]string, k), make([]int64, k), make([]string, k)
		for i, u := range b.UseLog {
			doc, err := json.Marshal(u.LoggedUse)
			if err != nil {
				return err
			}
			evs[i], ns[i], docs[i] = u.Event, int64(u.N), string(doc)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO use_log (event, n, doc) SELECT e, n, d::json FROM unnest($1::text[], $2::bigint[], $3::text[]) AS x(e, n, d)`,
			evs, ns, docs); err != nil {
			return fmt.Errorf("uses log: %w", err)
		}
		st.UseLog += k
	}
	if k := len(b.Alerts); k > 0 {
		ns, docs := make([]int64, k), make([]string, k)
		for i, a := range b.Alerts {
			doc, err := json.Marshal(a)
			if err != nil {
				return err
			}
			ns[i], docs[i] = int64(a.N), string(doc)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO alerts (n, doc) SELECT n, d::json FROM unnest($1::bigint[], $2::text[]) AS x(n, d)`,
			ns, docs); err != nil {
			return fmt.Errorf("alerts: %w", err)
		}
		st.Alerts += k
	}
	if k := len(b.Reentry); k > 0 {
		tag, err := tx.Exec(ctx, `INSERT INTO reentry_tickets (ticket) SELECT unnest($1::bytea[]) ON CONFLICT DO NOTHING`, ticketBytes(b.Reentry))
		if err != nil {
			return fmt.Errorf("re-entry tickets: %w", err)
		}
		st.Reentry += int(tag.RowsAffected())
	}
	return nil
}
