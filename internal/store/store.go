// Package store keeps trustpool's state: hosts, enrollments in flight, join
// tokens, the latest verdict and verified evidence of every host with the
// history of level changes, the versioned known-good database (references and
// policies), the hash-chained audit log, the webhook and Placement trait
// outboxes, API tokens, and the host leases and periodic job claims that
// divide work between server replicas.
//
// One concrete *Store runs on one of two engines, chosen by the DSN given to
// Open:
//
//   - SQLite (the embedded default, pure Go): "sqlite:/var/lib/trustpool/trustpool.db".
//     The file is created when missing and opened in WAL mode with foreign
//     keys on. Writes go through one connection, so writers queue in Go instead
//     of polling SQLite's lock; readers use a small read-only pool.
//   - PostgreSQL, for several server replicas sharing one database: a
//     "postgres://" (or "postgresql://") URL as github.com/jackc/pgx/v5
//     accepts it.
//
// To point the server at PostgreSQL, create an empty database owned by the
// server's role, then start every replica with its URL:
//
//	createuser --pwprompt trustpool && createdb -O trustpool trustpool
//	PGPASSWORD=… trustpool server --db 'postgres://trustpool@db.example:5432/trustpool?sslmode=verify-full'
//
// Keep the password out of the URL, which shows in the process list: pgx
// reads PGPASSWORD and ~/.pgpass (PGPASSFILE) as libpq does. Open creates
// and migrates the schema; replicas starting together take turns through an
// advisory lock, then divide the hosts between them with leases
// (ClaimHosts).
//
// The schema of each engine is embedded (schema/<engine>/NNNN_name.sql) and
// versioned in the table schema_migrations; Open applies the files the
// database has not seen yet, in one transaction, and refuses a database whose
// schema is newer than this binary.
//
// All times are stored as UTC microseconds since the Unix epoch (the same
// integers on both engines, so comparisons mean the same everywhere) and come
// back as UTC time.Time values truncated to the microsecond. The store has no
// clock: callers pass every time in, which keeps tests deterministic.
//
// The store trusts its callers: it validates shapes (names present, JSON well
// formed, known states) so that a bug cannot write a row that later reads
// back wrong, but it does not authenticate anyone. Opaque byte fields
// (evidence, measurements, reference and policy bodies) are stored and
// returned exactly as given.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Sentinel errors. Methods wrap them, so test with errors.Is.
var (
	// ErrNotFound: the named row does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the write collides with an existing row (a duplicate key,
	// an EK already bound to another host).
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the caller passed a value the store refuses to write.
	ErrInvalid = errors.New("invalid")
)

// Store is the trustpool database. It is safe for concurrent use.
type Store struct {
	eng engine
	dsn string // for the change feed's own connection (Listen)
	// rdb serves reads; wdb serves writes. They are the same pool on
	// PostgreSQL; on SQLite wdb holds a single connection.
	rdb, wdb *sql.DB

	// stmts caches statements prepared on a pool by query text, for the
	// hot paths on engines with prepareWrites. The queries are constants,
	// so the map stays small.
	stmtMu sync.Mutex
	stmts  map[stmtKey]*sql.Stmt
}

type stmtKey struct {
	db    *sql.DB
	query string
}

// Open connects to the database named by dsn ("sqlite:PATH" or a
// "postgres://" URL), applies pending schema migrations and returns the store.
func Open(ctx context.Context, dsn string) (*Store, error) {
	eng, err := engineFor(dsn)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	rdb, wdb, err := eng.open(dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s store: %w", eng.name, err)
	}
	s := &Store{eng: eng, dsn: dsn, rdb: rdb, wdb: wdb, stmts: map[stmtKey]*sql.Stmt{}}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open %s store: %w", eng.name, err)
	}
	return s, nil
}

// Engine names the database engine: "sqlite" or "postgres".
func (s *Store) Engine() string { return s.eng.name }

// Close releases the database connections.
func (s *Store) Close() error {
	var err error
	s.stmtMu.Lock()
	for _, st := range s.stmts {
		err = errors.Join(err, st.Close())
	}
	clear(s.stmts)
	s.stmtMu.Unlock()
	err = errors.Join(err, s.rdb.Close())
	if s.wdb != s.rdb {
		err = errors.Join(err, s.wdb.Close())
	}
	if err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Ping checks that the database answers a query, on the read and the
// write pool.
func (s *Store) Ping(ctx context.Context) error {
	for _, db := range []*sql.DB{s.rdb, s.wdb} {
		var one int
		if err := db.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	return nil
}

// inTx runs fn in one write transaction and commits it when fn returns nil.
func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, ignoreDone(tx.Rollback()))
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", s.eng.classify(err))
	}
	return nil
}

// warm prepares queries on the write pool, for the hot write paths on
// engines with prepareWrites. It must run outside a transaction.
func (s *Store) warm(ctx context.Context, queries ...string) {
	for _, q := range queries {
		s.stmt(ctx, s.wdb, q)
	}
}

// stmt returns query prepared on db, preparing it on first use, or nil on
// engines without prepareWrites. It prepares without holding stmtMu: on
// SQLite the write pool's one connection may be held by a transaction that
// needs stmtMu to finish.
func (s *Store) stmt(ctx context.Context, db *sql.DB, query string) *sql.Stmt {
	if !s.eng.prepareWrites {
		return nil
	}
	k := stmtKey{db, query}
	s.stmtMu.Lock()
	st, ok := s.stmts[k]
	s.stmtMu.Unlock()
	if ok {
		return st
	}
	// On failure the query runs unprepared, which reports the error.
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if prev, ok := s.stmts[k]; ok {
		st.Close() // another caller prepared it meanwhile
		return prev
	}
	s.stmts[k] = st
	return st
}

// prepared returns query as warm prepared it, bound to tx, or nil.
func (s *Store) prepared(ctx context.Context, tx *sql.Tx, query string) *sql.Stmt {
	s.stmtMu.Lock()
	st, ok := s.stmts[stmtKey{s.wdb, query}]
	s.stmtMu.Unlock()
	if !ok {
		return nil
	}
	return tx.StmtContext(ctx, st)
}

// queryRow runs a one-row query on db outside a transaction, kept prepared
// on engines with prepareWrites (the attestation path reads a host and
// numbers its attestation every time).
func (s *Store) queryRow(ctx context.Context, db *sql.DB, query string, args ...any) *sql.Row {
	if st := s.stmt(ctx, db, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return db.QueryRowContext(ctx, query, args...)
}

// txExec runs a write statement in tx, prepared if warm prepared it.
func (s *Store) txExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if st := s.prepared(ctx, tx, query); st != nil {
		return st.ExecContext(ctx, args...)
	}
	return tx.ExecContext(ctx, query, args...)
}

// txQueryRow runs a one-row query in tx, prepared if warm prepared it.
func (s *Store) txQueryRow(ctx context.Context, tx *sql.Tx, query string, args ...any) *sql.Row {
	if st := s.prepared(ctx, tx, query); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return tx.QueryRowContext(ctx, query, args...)
}

func ignoreDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}

// mustAffect turns "no row matched" into ErrNotFound.
func mustAffect(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// micros is the stored form of a time.
func micros(t time.Time) int64 { return t.UnixMicro() }

// fromMicros reads a stored time back.
func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// nullMicros stores an optional time: the zero time is NULL.
func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

// fromNullMicros reads an optional time back.
func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

// Truncate returns t as the store gives it back: UTC, to the microsecond.
// Callers comparing a written time with the one read back use it.
func Truncate(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// invalid reports a refused value.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// limitOK checks a caller's page size.
func limitOK(limit int) error {
	if limit <= 0 {
		return invalid("limit %d must be positive", limit)
	}
	return nil
}
