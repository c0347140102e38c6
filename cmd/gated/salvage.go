package main

// gated salvage: copy what can be read out of a damaged store, and carry
// it into a freshly provisioned one so the old journal still reaches the
// centre exactly once.

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/gated-dev/gated/gate/cache"
	"github.com/gated-dev/gated/internal/cli"
)

func init() { commands["salvage"] = cmdSalvage }

func cmdSalvage(args []string, io stdio, _ func() time.Time) error {
	fs := flag.NewFlagSet("gated salvage", flag.ContinueOnError)
	fs.SetOutput(io.errOut)
	data := fs.String("data", "", "gate data directory: the damaged store with --out, the fresh one with --import")
	out := fs.String("out", "", "write the salvage here (JSON lines)")
	imp := fs.String("import", "", "carry this salvage file into the freshly provisioned store in --data")
	fs.Usage = func() {
		fmt.Fprint(io.errOut, "usage: gated salvage --data DIR --out FILE\n"+
			"       gated salvage --import FILE --data NEWDIR\n\n"+
			"The first copies every readable journal record, use and outbox record of the store in DIR\n"+
			"to FILE, and says what was lost. The second carries FILE into a store provisioned fresh\n"+
			"(gated provision --data NEWDIR BUNDLE): its outbox is then sent to the centre under the old\n"+
			"ids, which the centre books once.\n\n")
		fs.PrintDefaults()
	}
	if _, err := cli.Parse(fs, args); err != nil {
		return err
	}
	switch {
	case *data == "":
		return cli.Usagef("--data DIR is required")
	case (*out == "") == (*imp == ""):
		return cli.Usagef("give one of --out FILE (salvage DIR) or --import FILE (into a fresh DIR)")
	case *imp != "":
		return salvageImport(*data, *imp, io)
	}
	path := filepath.Join(*data, cache.FileName)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no store to salvage: %w", err)
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("salvage output (it must not exist yet): %w", err)
	}
	rep, err := cache.Salvage(path, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(io.out, "salvaged instance %s, event %s: %d journal records (last sequence %d), %d uses, %d not yet sent to the centre\n",
		rep.Instance, rep.Event, rep.Journal, rep.LastSeq, rep.Uses, rep.Outbox)
	if rep.FromPages > 0 {
		fmt.Fprintf(io.out, "%d records recovered from older copies of damaged pages\n", rep.FromPages)
	}
	fmt.Fprintf(io.out, "not recovered: %s\n", rep.Lost())
	fmt.Fprintf(io.out, "next: gated provision --data NEWDIR BUNDLE, then gated salvage --import %s --data NEWDIR\n", *out)
	return nil
}

func salvageImport(data, file string, io stdio) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	s, err := openExisting(data)
	if err != nil {
		return err
	}
	defer s.Close()
	r, err := s.ImportSalvage(f)
	if err != nil {
		return err
	}
	fmt.Fprintf(io.out, "imported instance %s: %d journal records, %d uses, %d to send to the centre; new decisions start at %d\n",
		r.Instance, r.Journal, r.Uses, r.Outbox, r.NextSeq)
	return nil
}
