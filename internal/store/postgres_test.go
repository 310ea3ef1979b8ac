package store_test

import (
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"trustpool/internal/store"
	"trustpool/internal/store/storetest"
)

// pgBin is where Debian installs PostgreSQL 15's server programs.
const pgBin = "/usr/lib/postgresql/15/bin"

// pgCluster is a private PostgreSQL cluster started by a test on loopback.
type pgCluster struct {
	port  int
	admin *sql.DB // connected to the postgres database, for CREATE DATABASE
	next  atomic.Int64
}

// startPostgres starts a cluster in a new directory and stops it when tb
// ends. Without PostgreSQL the test is skipped, unless CI=true.
func startPostgres(tb testing.TB) *pgCluster {
	tb.Helper()
	if _, err := os.Stat(filepath.Join(pgBin, "initdb")); err != nil {
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
	if out, err := run(filepath.Join(pgBin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	port := freePort(tb)
	// fsync off: the cluster lives for one test run.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", port, dir)
	if out, err := run(filepath.Join(pgBin, "pg_ctl"), "-D", data, "-o", opts, "-l", filepath.Join(dir, "log"),
		"-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		tb.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	tb.Cleanup(func() {
		if out, err := run(filepath.Join(pgBin, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
			tb.Errorf("pg_ctl stop: %v\n%s", err, out)
		}
	})
	c := &pgCluster{port: port}
	cfg, err := pgx.ParseConfig(c.dsn("postgres"))
	if err != nil {
		tb.Fatal(err)
	}
	c.admin = stdlib.OpenDB(*cfg)
	tb.Cleanup(func() { c.admin.Close() })
	return c
}

func (c *pgCluster) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// newDatabase creates an empty database and drops it when tb ends.
func (c *pgCluster) newDatabase(tb testing.TB) string {
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
	return c.dsn(name)
}

// open returns a store on a new database.
func (c *pgCluster) open(t *testing.T) *store.Store {
	t.Helper()
	return openDSN(t, c.newDatabase(t))
}

func openDSN(tb testing.TB, dsn string) *store.Store {
	tb.Helper()
	s, err := store.Open(tb.Context(), dsn)
	if err != nil {
		tb.Fatalf("open %s: %v", dsn, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return s
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

func TestPostgresConformance(t *testing.T) {
	c := startPostgres(t)
	storetest.Run(t, c.open)
}

// TestPostgresReplicas runs several stores on one database, as several
// server replicas do: they migrate together at start, then share leases and
// the audit chain.
func TestPostgresReplicas(t *testing.T) {
	c := startPostgres(t)
	dsn := c.newDatabase(t)
	const replicas = 4
	stores := make([]*store.Store, replicas)
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = store.Open(t.Context(), dsn) })
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("replica %d: open: %v", i, errs[i])
		}
		t.Cleanup(func() { s.Close() })
	}
	ctx := t.Context()
	now := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	const hosts = 40
	for i := range hosts {
		h := store.Host{Name: fmt.Sprintf("node%02d", i), State: store.HostActive, EKPublic: []byte{byte(i)}}
		if err := stores[i%replicas].PutHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	owner := make(map[string]int)
	var mu sync.Mutex
	for i, s := range stores {
		wg.Go(func() {
			for {
				got, err := s.ClaimHosts(ctx, fmt.Sprint("replica-", i), now, time.Minute, 3)
				if err == nil {
					err = s.Append(ctx, store.Entry{Time: now, Actor: fmt.Sprint("replica-", i), Action: "lease.claim",
						Subject: fmt.Sprint(got)})
				}
				if err != nil {
					t.Errorf("replica %d: %v", i, err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, h := range got {
					if o, dup := owner[h]; dup {
						t.Errorf("%s claimed by replicas %d and %d", h, o, i)
					}
					owner[h] = i
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(owner) != hosts {
		t.Fatalf("%d hosts claimed, want %d", len(owner), hosts)
	}
	entries, err := stores[0].ListAudit(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.VerifyChain(entries); err != nil {
		t.Fatalf("replicas forked the audit chain: %v", err)
	}
}
