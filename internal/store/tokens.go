package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Token is an API credential. Only the SHA-256 of the secret is stored.
// A revoked token stays listed (for the audit trail) but must not
// authenticate: callers check Revoked.
type Token struct {
	Hash      []byte
	Name      string // unique, chosen by the operator
	Role      string // admin, reader, scheduler, agent
	CreatedAt time.Time
	RevokedAt time.Time // zero while valid
}

// Revoked reports whether the token was revoked.
func (t Token) Revoked() bool { return !t.RevokedAt.IsZero() }

const tokenColumns = `hash, name, role, created_at, revoked_at`

// CreateToken stores t. A hash or name already stored is ErrConflict.
func (s *Store) CreateToken(ctx context.Context, t Token) error {
	if len(t.Hash) == 0 || t.Name == "" || t.Role == "" {
		return fmt.Errorf("create token %q: %w", t.Name, invalid("hash, name and role are required"))
	}
	_, err := s.wdb.ExecContext(ctx, `INSERT INTO api_tokens (`+tokenColumns+`) VALUES ($1, $2, $3, $4, $5)`,
		t.Hash, t.Name, t.Role, micros(t.CreatedAt), nullMicros(t.RevokedAt))
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.Name, s.eng.classify(err))
	}
	return nil
}

// TokenByHash returns the token with this hash, revoked or not, or
// ErrNotFound.
func (s *Store) TokenByHash(ctx context.Context, hash []byte) (Token, error) {
	t, err := scanToken(s.rdb.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens WHERE hash = $1`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Token{}, fmt.Errorf("token by hash: %w", err)
	}
	return t, nil
}

// ListTokens returns every token, ordered by name.
func (s *Store) ListTokens(ctx context.Context) ([]Token, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	ts, err := collect(rows, scanToken)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ts, nil
}

// RevokeToken revokes the named token at at, or returns ErrNotFound. A
// token revoked before keeps its first revocation time.
func (s *Store) RevokeToken(ctx context.Context, name string, at time.Time) error {
	if at.IsZero() {
		return fmt.Errorf("revoke token %s: %w", name, invalid("zero revocation time"))
	}
	res, err := s.wdb.ExecContext(ctx, `UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE name = $1`,
		name, micros(at))
	if err == nil {
		err = mustAffect(res)
	}
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", name, err)
	}
	return nil
}

func scanToken(r scanner) (Token, error) {
	var t Token
	var created int64
	var revoked sql.NullInt64
	err := r.Scan(&t.Hash, &t.Name, &t.Role, &created, &revoked)
	t.CreatedAt, t.RevokedAt = fromMicros(created), fromNullMicros(revoked)
	return t, err
}
