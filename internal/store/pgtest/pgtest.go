// Package pgtest is test equipment: a private PostgreSQL cluster started
// by a test on loopback, as the postgres user when the test runs as root,
// and stopped when the test ends. Without PostgreSQL the test skips,
// unless CI=true, where it fails.
package pgtest

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Bin is where Debian installs PostgreSQL 15's server programs.
const Bin = "/usr/lib/postgresql/15/bin"

// Cluster is a private PostgreSQL cluster started by a test on loopback.
type Cluster struct {
	port  int
	data  string  // the data directory, holding postmaster.pid
	admin *sql.DB // connected to the postgres database, for CREATE DATABASE
	next  atomic.Int64

	mu     sync.Mutex // guards paused
	paused []int      // the processes Pause stopped
}

// Start starts a cluster in a new directory and stops it when tb
// ends. Without PostgreSQL the test is skipped, unless CI=true.
func Start(tb testing.TB) *Cluster {
	tb.Helper()
	if _, err := os.Stat(filepath.Join(Bin, "initdb")); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("PostgreSQL is required when CI=true: %v", err)
		}
		tb.Skipf("PostgreSQL not installed: %v", err)
	}
	// PostgreSQL refuses to run as root: run it as the postgres user, in a
	// directory that user owns (t.TempDir's parents are not traversable).
	run := func(args ...string) *exec.Cmd { return exec.Command(args[0], args[1:]...) }
	dir, err := os.MkdirTemp("", "trustpool-pg-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			tb.Fatalf("running as root needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			tb.Fatal(err)
		}
		run = func(args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := run(filepath.Join(Bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	port := freePort(tb)
	// fsync off: the cluster lives for one test run.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", port, dir)
	if out, err := run(filepath.Join(Bin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"),
		"-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		tb.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	tb.Cleanup(func() {
		if out, err := run(filepath.Join(Bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
			tb.Errorf("pg_ctl stop: %v\n%s", err, out)
		}
	})
	c := &Cluster{port: port, data: data}
	cfg, err := pgx.ParseConfig(c.DSN("postgres"))
	if err != nil {
		tb.Fatal(err)
	}
	c.admin = stdlib.OpenDB(*cfg)
	tb.Cleanup(func() { c.admin.Close() })
	return c
}

func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// NewDatabase creates an empty database and drops it when tb ends.
func (c *Cluster) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("t%d", c.next.Add(1))
	if _, err := c.admin.ExecContext(tb.Context(), "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		// Cleanups run after tb's context is cancelled.
		if _, err := c.admin.Exec("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
			tb.Errorf("drop database: %v", err)
		}
	})
	return c.DSN(name)
}

// Pause stops every process of the cluster with SIGSTOP: as across a
// network partition, connections stay open and nothing answers, neither
// queries nor new connections, and nothing is refused. Resume (or the end
// of tb) lets them go on. It needs the right to signal the postgres user's
// processes (the test runs as root or as that user).
func (c *Cluster) Pause(tb testing.TB) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused != nil {
		tb.Fatal("pgtest: the cluster is paused already")
	}
	b, err := os.ReadFile(filepath.Join(c.data, "postmaster.pid"))
	if err != nil {
		tb.Fatalf("pgtest: postmaster.pid: %v", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pm, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		tb.Fatalf("pgtest: postmaster.pid: %q", first)
	}
	// The postmaster first, so that it starts no process the list misses.
	if err := syscall.Kill(pm, syscall.SIGSTOP); err != nil {
		tb.Fatalf("pgtest: stop the postmaster: %v", err)
	}
	c.paused = []int{pm}
	tb.Cleanup(func() { c.resume() })
	for _, pid := range children(pm) {
		if syscall.Kill(pid, syscall.SIGSTOP) == nil {
			c.paused = append(c.paused, pid)
		}
	}
}

// Resume lets the processes Pause stopped go on.
func (c *Cluster) Resume(tb testing.TB) {
	tb.Helper()
	if err := c.resume(); err != nil {
		tb.Fatal(err)
	}
}

func (c *Cluster) resume() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, pid := range c.paused {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("pgtest: continue process %d: %w", pid, err))
		}
	}
	c.paused = nil
	return errors.Join(errs...)
}

// children returns the processes whose parent is pid, from /proc.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces and parentheses.
		_, rest, ok := strings.Cut(string(b[bytes.LastIndexByte(b, ')')+1:]), " ")
		if f := strings.Fields(rest); ok && len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
