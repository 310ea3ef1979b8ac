package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Enrollment is a credential activation in flight: the server has sent the
// agent a challenge encrypted to its EK and bound to its AK's name, and
// waits for the agent to prove it could decrypt it. SecretHash is the
// SHA-256 of that secret; TokenHash the hash of the join token presented,
// if any. Nothing in an Enrollment is trusted until the activation
// succeeds.
type Enrollment struct {
	ID         string
	Host       string
	EKPublic   []byte
	EKCert     []byte
	AKPublic   []byte
	AKName     []byte
	URL        string
	CSR        []byte
	SecretHash []byte
	TokenHash  []byte
	Source     string // the client address the request came from
	ExpiresAt  time.Time
	CreatedAt  time.Time
}

const enrollmentColumns = `id, host, ek_public, ek_cert, ak_public, ak_name, url, csr, secret_hash, token_hash, source, expires_at, created_at`

// CreateEnrollment stores e. An ID already in use is ErrConflict.
func (s *Store) CreateEnrollment(ctx context.Context, e Enrollment) error {
	if e.ID == "" || e.Host == "" {
		return fmt.Errorf("create enrollment: %w", invalid("empty ID or host name"))
	}
	_, err := s.wdb.ExecContext(ctx, `INSERT INTO enrollments (`+enrollmentColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		e.ID, e.Host, e.EKPublic, e.EKCert, e.AKPublic, e.AKName, e.URL, e.CSR, e.SecretHash,
		e.TokenHash, e.Source, micros(e.ExpiresAt), micros(e.CreatedAt))
	if err != nil {
		return fmt.Errorf("create enrollment for %s: %w", e.Host, s.eng.classify(err))
	}
	return nil
}

// TakeEnrollment returns the enrollment and deletes it in one statement, so
// an activation can be attempted once only; a second Take is ErrNotFound.
// It returns expired enrollments too: the caller checks ExpiresAt against
// its clock.
func (s *Store) TakeEnrollment(ctx context.Context, id string) (Enrollment, error) {
	var e Enrollment
	var expires, created int64
	err := s.wdb.QueryRowContext(ctx, `DELETE FROM enrollments WHERE id = $1 RETURNING `+enrollmentColumns, id).Scan(
		&e.ID, &e.Host, &e.EKPublic, &e.EKCert, &e.AKPublic, &e.AKName, &e.URL, &e.CSR, &e.SecretHash,
		&e.TokenHash, &e.Source, &expires, &created)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Enrollment{}, fmt.Errorf("take enrollment: %w", err)
	}
	e.ExpiresAt, e.CreatedAt = fromMicros(expires), fromMicros(created)
	return e, nil
}

// DeleteExpiredEnrollments removes what waits and expired at or before
// now, enrollments in flight and pending requests alike, and returns how
// many there were.
func (s *Store) DeleteExpiredEnrollments(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for _, table := range []string{"enrollments", "pending_hosts"} {
		res, err := s.wdb.ExecContext(ctx, `DELETE FROM `+table+` WHERE expires_at <= $1`, micros(now))
		if err != nil {
			return total, fmt.Errorf("delete expired %s: %w", table, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("delete expired %s: %w", table, err)
		}
		total += int(n)
	}
	return total, nil
}
