package store

import (
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// engine holds everything that differs between SQLite and PostgreSQL. The
// queries themselves are shared: both engines accept $N placeholders
// (modernc.org/sqlite binds $N to the N-th argument), INSERT … ON CONFLICT
// … DO UPDATE, RETURNING and CTEs. Column types (BLOB vs bytea, INTEGER vs
// bigint) live in the per-engine schema files.
type engine struct {
	name string
	// open returns the read and write pools.
	open func(dsn string) (rdb, wdb *sql.DB, err error)
	// rowLocks: the engine has row locks (SELECT … FOR UPDATE). SQLite has
	// none and needs none: its writes are serialised by the single write
	// connection and the database lock.
	rowLocks bool
	// prepareWrites: keep the hot write statements prepared. modernc's
	// SQLite parses an unprepared statement on every call, which costs more
	// than executing a small write; pgx caches prepared statements itself.
	prepareWrites bool
	// migrationLock, when set, is run first in the migration transaction so
	// that replicas starting together migrate one after the other.
	migrationLock string
	// classify wraps constraint violations with ErrConflict or ErrNotFound.
	classify func(error) error
}

// forUpdate is the clause that makes a SELECT lock the rows it reads from
// table until commit; with skipLocked, rows another transaction holds are
// skipped instead of waited for (claims). It is empty on SQLite.
func (e engine) forUpdate(table string, skipLocked bool) string {
	if !e.rowLocks {
		return ""
	}
	c := " FOR NO KEY UPDATE OF " + table
	if skipLocked {
		c += " SKIP LOCKED"
	}
	return c
}

func engineFor(dsn string) (engine, error) {
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		return engine{
			name:          "sqlite",
			open:          openSQLite,
			classify:      classifySQLite,
			prepareWrites: true,
		}, nil
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return engine{
			name:     "postgres",
			open:     openPostgres,
			rowLocks: true,
			// An arbitrary constant naming trustpool's migration lock.
			migrationLock: "SELECT pg_advisory_xact_lock(7305429113541378048)",
			classify:      classifyPostgres,
		}, nil
	}
	return engine{}, fmt.Errorf("%w: DSN must start with sqlite: or postgres://", ErrInvalid)
}

// SQLite connection settings. WAL lets readers run beside the writer;
// synchronous=NORMAL in WAL mode never corrupts the file but a power loss may
// drop the last commits (verdicts are re-established by the next poll);
// busy_timeout covers other processes (the CLI) holding the lock;
// _txlock=immediate takes the write lock at BEGIN so a transaction never
// fails half-way on a lock upgrade.
const sqliteParams = "_busy_timeout=10000&_foreign_keys=1&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate"

func openSQLite(dsn string) (rdb, wdb *sql.DB, err error) {
	path := strings.TrimPrefix(dsn, "sqlite:")
	if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, ":") || strings.HasPrefix(path, "file:") {
		return nil, nil, fmt.Errorf("%w: SQLite DSN must be sqlite:PATH to a file, got %q", ErrInvalid, dsn)
	}
	base := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + sqliteParams
	wdb, err = sql.Open("sqlite", base)
	if err != nil {
		return nil, nil, err
	}
	// One writer: concurrent writers queue on the pool, not on SQLite's lock.
	wdb.SetMaxOpenConns(1)
	// Create the file and switch it to WAL before readers open it read-only.
	if err := wdb.Ping(); err != nil {
		wdb.Close()
		return nil, nil, err
	}
	rdb, err = sql.Open("sqlite", base+"&_query_only=1")
	if err != nil {
		wdb.Close()
		return nil, nil, err
	}
	rdb.SetMaxOpenConns(4)
	rdb.SetMaxIdleConns(4)
	return rdb, wdb, nil
}

func classifySQLite(err error) error {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Code() {
	case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

func openPostgres(dsn string) (rdb, wdb *sql.DB, err error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, nil, err
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(8)
	return db, db, nil
}

func classifyPostgres(err error) error {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return err
	}
	switch pe.Code {
	case "23505": // unique_violation
		return fmt.Errorf("%w: %w", ErrConflict, err)
	case "23503": // foreign_key_violation
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}
