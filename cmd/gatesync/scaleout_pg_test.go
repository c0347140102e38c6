package main

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gated-dev/gated/internal/cli"
	"github.com/gated-dev/gated/internal/scaleouttest"
)

// TestScaleOutExactlyOnce runs two gatesync serve instances on one
// mosquitto and one PostgreSQL while four gates drain their backlogs
// through the $share subscription, kills one instance mid-stream, and
// checks that every entry is in the books exactly once and that both
// instances stored some.
func TestScaleOutExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts PostgreSQL, mosquitto and six processes")
	}
	const gates, backlog = 4, 2500
	d := scaleouttest.New(t, scaleouttest.Build(t), scaleouttest.Options{Gates: gates, Backlog: backlog, Instances: 2, LogLevel: "debug"})
	d.StartInstances()
	d.StartGates()
	total := d.Total()
	d.WaitStored(total/4, time.Minute)
	killed := d.Stored()
	d.Instances[1].Kill()
	if killed >= total {
		t.Fatalf("every entry was stored before the kill: nothing left mid-stream")
	}
	// In-flight batches at the killed instance are acked by nobody: the
	// gates send them again after their 15 s ack timeout.
	took := d.WaitStored(total, 2*time.Minute)
	t.Logf("%d of %d entries stored when instance 1 was killed; the rest took %s", killed, total, took.Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond) // a late duplicate would show now

	var n, ids, seqs int
	if err := d.Query(`SELECT count(*), count(DISTINCT id), count(DISTINCT (gate, instance, seq)) FROM entries`, &n, &ids, &seqs); err != nil {
		t.Fatal(err)
	}
	if n != total || ids != total || seqs != total {
		t.Errorf("books: %d entries, %d distinct ids, %d distinct (gate, instance, seq); want %d each", n, ids, seqs, total)
	}
	var complete int
	if err := d.Query(`SELECT count(*) FROM (SELECT gate FROM entries GROUP BY gate
		HAVING count(*) = 2500 AND min(seq) = 1 AND max(seq) = 2500) g`, &complete); err != nil {
		t.Fatal(err)
	}
	var storedTo int
	if err := d.Query(`SELECT count(*) FROM streams WHERE stored_to = 2500`, &storedTo); err != nil {
		t.Fatal(err)
	}
	if complete != gates || storedTo != gates {
		t.Errorf("%d gates with seqs 1..%d complete, %d with stored_to %d; want %d", complete, backlog, storedTo, backlog, gates)
	}
	var maxN, gaps int64
	if err := d.Query(`SELECT max(n), max(n) - count(*) FROM entries`, &maxN, &gaps); err != nil {
		t.Fatal(err)
	}
	if gaps != 0 {
		t.Errorf("record numbers up to %d leave %d gaps", maxN, gaps)
	}
	for i, p := range d.Instances {
		c := strings.Count(p.Stderr(), "msg=ingested")
		t.Logf("instance %d stored %d batches", i, c)
		if c == 0 {
			t.Errorf("instance %d stored no batch: the shared subscription did not split the entries\n%s", i, p.Stderr())
		}
	}
	for _, bad := range []string{"ingest failed", "refused uplink", "subscribe failed"} {
		if s := d.Instances[0].Stderr(); strings.Contains(s, bad) {
			t.Errorf("the surviving instance logged %q:\n%s", bad, s)
		}
	}
}

func TestScaleOutFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--store", "mysql://x"}, "--store \"mysql://x\": use bbolt or a URL"},
		{[]string{"--share-group", "g"}, "must share the books"},
		{[]string{"--store", "postgres://h/db", "--share-group", "g"}, "external broker"},
		{[]string{"--store", "postgres://h/db", "--share-group", "g", "--broker", "tcp://h:1883"}, "own --client-id"},
		{[]string{"--store", "postgres://h/db", "--share-group", "a/b", "--broker", "tcp://h:1883", "--client-id", "x"}, "no '/'"},
		{[]string{"--ingest-only"}, "add --share-group"},
	} {
		err := cmdServe(append([]string{"--dir", dir}, tc.args...), io.Discard, time.Now)
		var u *cli.UsageError
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.As(err, &u) {
			t.Errorf("%v: %v; want a usage error with %q", tc.args, err, tc.want)
		}
	}
}
