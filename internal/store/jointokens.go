package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Join token errors, distinct so that the enrollment API can say why a
// token was refused. A token never seen is ErrNotFound.
var (
	ErrTokenUsed    = errors.New("join token already used")
	ErrTokenExpired = errors.New("join token expired")
	ErrTokenHost    = errors.New("join token bound to another host")
)

// JoinToken admits one named host once. Only the SHA-256 of the token is
// stored, so a copy of the database does not admit anyone.
type JoinToken struct {
	Hash      []byte
	Host      string
	ExpiresAt time.Time
	CreatedAt time.Time
	UsedAt    time.Time // zero until consumed
}

// CreateJoinToken stores t. A hash already stored is ErrConflict.
func (s *Store) CreateJoinToken(ctx context.Context, t JoinToken) error {
	if len(t.Hash) == 0 || t.Host == "" {
		return fmt.Errorf("create join token: %w", invalid("empty hash or host name"))
	}
	_, err := s.wdb.ExecContext(ctx, `INSERT INTO join_tokens (hash, host, expires_at, created_at, used_at)
		VALUES ($1, $2, $3, $4, $5)`,
		t.Hash, t.Host, micros(t.ExpiresAt), micros(t.CreatedAt), nullMicros(t.UsedAt))
	if err != nil {
		return fmt.Errorf("create join token for %s: %w", t.Host, s.eng.classify(err))
	}
	return nil
}

// ConsumeJoinToken marks the token with this hash used at now, if it is
// bound to host, unused and not expired at now. The check and the mark are
// one statement, so of concurrent consumers exactly one succeeds. Otherwise
// it returns ErrNotFound, ErrTokenHost, ErrTokenUsed or ErrTokenExpired, in
// that order of precedence.
func (s *Store) ConsumeJoinToken(ctx context.Context, hash []byte, host string, now time.Time) error {
	return consumeJoinToken(ctx, s.wdb, hash, host, now)
}

// CheckJoinToken reports, as ConsumeJoinToken would, whether the token with
// this hash could admit host at now, without consuming it.
func (s *Store) CheckJoinToken(ctx context.Context, hash []byte, host string, now time.Time) error {
	return tokenRefusal(ctx, s.rdb, hash, host, now, true)
}

// querier is a *sql.DB or a *sql.Tx.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func consumeJoinToken(ctx context.Context, db querier, hash []byte, host string, now time.Time) error {
	res, err := db.ExecContext(ctx, `UPDATE join_tokens SET used_at = $1
		WHERE hash = $2 AND host = $3 AND used_at IS NULL AND expires_at > $1`,
		micros(now), hash, host)
	if err != nil {
		return fmt.Errorf("consume join token for %s: %w", host, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("consume join token for %s: %w", host, err)
	} else if n == 1 {
		return nil
	}
	// Refused: read the row to say why. The decision was made above; this
	// read only explains it.
	return tokenRefusal(ctx, db, hash, host, now, false)
}

// tokenRefusal reads the token's row and says why it cannot admit host at
// now; nil only when usable is set and it can.
func tokenRefusal(ctx context.Context, db querier, hash []byte, host string, now time.Time, usable bool) error {
	var (
		bound   string
		expires int64
		used    sql.NullInt64
	)
	err := db.QueryRowContext(ctx, `SELECT host, expires_at, used_at FROM join_tokens WHERE hash = $1`, hash).
		Scan(&bound, &expires, &used)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		err = ErrNotFound
	case err != nil:
	case bound != host:
		err = ErrTokenHost
	case used.Valid:
		err = ErrTokenUsed
	case expires <= micros(now):
		err = ErrTokenExpired
	case usable:
		return nil
	default: // created after the update ran
		err = ErrNotFound
	}
	return fmt.Errorf("consume join token for %s: %w", host, err)
}
