// Package pgtest runs a throwaway PostgreSQL cluster for tests and
// benchmarks: Debian's initdb and pg_ctl, a free 127.0.0.1 port, trust
// authentication, everything in a temporary directory removed at the end.
// As root it runs the server as the postgres user, since initdb refuses
// root.
package pgtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"

	"github.com/gated-dev/gated/internal/testreq"
)

// TB is the part of testing.TB the helpers use, so benchmark programs can
// pass their own.
type TB interface {
	testreq.TB
	Cleanup(func())
}

// Options describe the cluster; the zero value is a cluster tuned for
// tests (fsync off).
type Options struct {
	// Durable keeps fsync and synchronous_commit on, for benchmarks whose
	// figures should mean what they would in production.
	Durable bool
}

// Cluster is a running cluster.
type Cluster struct {
	// DSN is a postgres:// URL of its database "postgres" as user
	// "postgres".
	DSN  string
	Port int
	dir  string
	bin  string
	cred *syscall.Credential
	log  string
}

// BinDir returns the directory of initdb and pg_ctl: PATH first, then the
// newest /usr/lib/postgresql/*/bin.
func BinDir() (string, bool) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), true
	}
	ds, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(ds, func(i, j int) bool { return version(ds[i]) > version(ds[j]) })
	for _, d := range ds {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, true
		}
	}
	return "", false
}

func version(bin string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(bin)))
	return v
}

// Start initialises and starts a cluster; it skips the test when the
// PostgreSQL server binaries are not installed.
func Start(t TB, o Options) *Cluster {
	t.Helper()
	bin, ok := BinDir()
	if !ok {
		testreq.Skipf(t, "PostgreSQL server is not installed (apt-get install postgresql): no initdb on PATH or in /usr/lib/postgresql/*/bin")
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &Cluster{dir: dir, bin: bin, log: filepath.Join(dir, "server.log")}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			testreq.Skipf(t, "pgtest: running as root and there is no postgres user to run the server as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := c.run("initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale"); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	c.Port = freePort(t)
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", c.Port, dir)
	if !o.Durable {
		opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	}
	if out, err := c.run("pg_ctl", "-D", data, "-l", c.log, "-o", opts, "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(c.log)
		t.Fatalf("pgtest: pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	t.Cleanup(c.Stop)
	c.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
	return c
}

func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// Database creates a database named name (a plain identifier) on the
// cluster and returns its postgres:// URL, for tests that want books of
// their own.
func (c *Cluster) Database(t TB, name string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.DSN)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	return strings.Replace(c.DSN, "/postgres?", "/"+name+"?", 1)
}

// Stop stops the cluster at once (its data is thrown away anyway).
func (c *Cluster) Stop() {
	c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
}

// Log is what the server wrote to its log.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(c.log)
	return string(b)
}

func freePort(t TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
