package bench

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// pgBin is where Debian installs PostgreSQL 15's server programs.
const pgBin = "/usr/lib/postgresql/15/bin"

// pgCluster is a throw-away PostgreSQL cluster in a temporary directory,
// listening on loopback and on a unix socket in that directory (the steps
// of internal/store's tests).
type pgCluster struct {
	dir  string
	data string
	dsn  string
	run  func(args ...string) *exec.Cmd
}

// startPostgres initialises and starts a cluster under parent (as the
// postgres user when root: PostgreSQL refuses to run as root) and creates
// the database trustpool.
func startPostgres(ctx context.Context, parent string) (*pgCluster, error) {
	if _, err := os.Stat(filepath.Join(pgBin, "initdb")); err != nil {
		return nil, fmt.Errorf("bench fleet: --db postgres needs PostgreSQL 15 (apt-get install postgresql): %w", err)
	}
	dir, err := os.MkdirTemp("", "trustpool-bench-pg-") // parents of parent may not be traversable by postgres
	if err != nil {
		return nil, err
	}
	c := &pgCluster{dir: dir, data: filepath.Join(dir, "data"), run: func(args ...string) *exec.Cmd { return exec.Command(args[0], args[1:]...) }}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("bench fleet: running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		c.run = func(args ...string) *exec.Cmd {
			return exec.Command("runuser", append([]string{"-u", "postgres", "--"}, args...)...)
		}
	}
	if out, err := c.run(filepath.Join(pgBin, "initdb"), "-D", c.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench fleet: initdb: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	// fsync stays on: the store's write cost is part of the figure.
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", port, dir)
	if out, err := c.run(filepath.Join(pgBin, "pg_ctl"), "-D", c.data, "-o", opts, "-l", filepath.Join(dir, "log"), "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "log"))
		os.RemoveAll(dir)
		return nil, fmt.Errorf("bench fleet: pg_ctl start: %v\n%s\n%s", err, out, log)
	}
	c.dsn = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/trustpool?sslmode=disable", port)
	err = withDB(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port), func(db *sql.DB) error {
		_, err := db.ExecContext(ctx, "CREATE DATABASE trustpool")
		return err
	})
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("bench fleet: create database: %w", err)
	}
	return c, nil
}

// stop stops the cluster and removes its directory.
func (c *pgCluster) stop() {
	if c == nil {
		return
	}
	cmd := c.run(filepath.Join(pgBin, "pg_ctl"), "-D", c.data, "-m", "immediate", "-w", "stop")
	cmd.Run()
	os.RemoveAll(c.dir)
}

// cpu returns the CPU seconds of the cluster's processes so far: the
// postmaster and its children.
func (c *pgCluster) cpu() float64 {
	if c == nil {
		return 0
	}
	b, err := os.ReadFile(filepath.Join(c.data, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0
	}
	total, _ := procCPU(pm)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pm {
			continue
		}
		if ppid(pid) == pm {
			t, _ := procCPU(pid)
			total += t
		}
	}
	return total
}

// ppid returns a process's parent.
func ppid(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}
