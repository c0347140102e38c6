package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/gated-dev/gated/gate"
	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/internal/cli"
)

// ArchiveDir is where a gate's archived journal lives, inside its data
// directory.
const ArchiveDir = "archive"

// retentionEvery is how often gated run archives old decisions.
const retentionEvery = time.Hour

func init() {
	commands["compact"] = cmdCompact
}

// startRetention archives, once at start and then every retentionEvery,
// the decisions older than the configured retention that the centre has
// acked, and prunes the uses of tickets whose validity ended longer ago
// than that. The returned stop ends it, after a pass in progress.
func startRetention(ctx context.Context, store *cache.Store, cfg *gate.Config, now func() time.Time, log *slog.Logger) (stop func()) {
	keep := cfg.Retention()
	if keep == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	log = log.With("component", "retention")
	dir := filepath.Join(cfg.Data, ArchiveDir)
	go func() {
		defer close(done)
		tick := time.NewTicker(retentionEvery)
		defer tick.Stop()
		for {
			cutoff := now().Add(-keep)
			res, err := store.Archive(dir, cutoff)
			switch {
			case err != nil:
				log.Error("archiving old decisions failed; they stay in the store", "err", err, "dir", dir)
			case res.Records > 0:
				log.Info("old decisions archived", "records", res.Records, "first_seq", res.FirstSeq, "last_seq", res.LastSeq,
					"files", res.Files, "retention", keep)
			}
			if n, err := store.PruneUses(cutoff); err != nil {
				log.Error("pruning uses of expired tickets failed", "err", err)
			} else if n > 0 {
				log.Info("uses of tickets expired before the retention pruned", "uses", n, "retention", keep)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() { cancel(); <-done }
}

// printJournal writes the journal as JSON lines: with archived, the
// archive files first, then the live journal.
func printJournal(s *cache.Store, data string, archived bool, out io.Writer) error {
	enc := json.NewEncoder(out)
	emit := func(e cache.Decision) error { return enc.Encode(&e) }
	if archived {
		if err := s.ArchivedJournal(filepath.Join(data, ArchiveDir), emit); err != nil {
			return err
		}
	}
	return s.Journal(0, emit)
}

func cmdCompact(args []string, io stdio, _ func() time.Time) error {
	data, pos, err := dataOnly("compact", args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("unexpected argument %q", pos[0])
	}
	if _, err := os.Stat(filepath.Join(data, cache.FileName)); err != nil {
		return fmt.Errorf("no gate store in %s: %w", data, err)
	}
	res, err := cache.Compact(data, 0)
	if err != nil {
		return err
	}
	if res.DroppedStaging {
		fmt.Fprintln(io.out, "dropped a snapshot that was staged and never applied (the centre sends it again)")
	}
	fmt.Fprintf(io.out, "compacted %s: %d -> %d bytes\n", filepath.Join(data, cache.FileName), res.Before, res.After)
	return nil
}
