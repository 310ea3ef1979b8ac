package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Admission makes a host of an enrolled TPM in one transaction: the join
// token it presents (if any) is consumed, the host is written, and the
// pending request it settles (if any) gets the certificate and its rivals
// for the name are dropped. A failure anywhere leaves nothing changed.
type Admission struct {
	Host Host
	// TokenHash, when set, is the join token that admits the host.
	TokenHash []byte
	// PendingPoll, when set, is the poll hash of the pending request an
	// operator approved.
	PendingPoll []byte
	// Audit, when set, is the admission's audit entry (an approval).
	Audit *Entry
	Now   time.Time
}

// AdmitHost admits a.Host. A new name is inserted; an existing host is
// replaced only when it is bound to the same EK, keeping its labels,
// policy and state (a re-enrollment of the same TPM). A name bound to
// another EK, or an EK bound to another name, is ErrConflict; the check and
// the write are one statement, so of two racing admissions of one name with
// different EKs one fails. Token errors are those of ConsumeJoinToken.
func (s *Store) AdmitHost(ctx context.Context, a Admission) error {
	h := a.Host
	if h.Name == "" || len(h.EKPublic) == 0 {
		return fmt.Errorf("admit host: %w", invalid("empty host name or EK"))
	}
	if !h.State.Valid() {
		return fmt.Errorf("admit host %s: %w", h.Name, invalid("state %q", h.State))
	}
	labels, err := jsonOrNull(h.Labels, len(h.Labels) == 0)
	if err != nil {
		return fmt.Errorf("admit host %s: encode labels: %w", h.Name, err)
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if a.TokenHash != nil {
			if err := consumeJoinToken(ctx, tx, a.TokenHash, h.Name, a.Now); err != nil {
				return err
			}
		}
		// Evidence quoted by the AK this admission replaces no longer
		// verifies under the host's AK: it goes, with the verdict row's
		// hash of its measurements, so that the next attestation is stored
		// in full even when it measures the same (see EvidenceRecord). A
		// failed admission rolls this back.
		const replaced = `host = $1 AND EXISTS (
				SELECT 1 FROM hosts WHERE name = $1 AND ek_hash = $2 AND ak_public IS DISTINCT FROM $3)`
		for _, stmt := range []string{
			`DELETE FROM evidence WHERE ` + replaced,
			`UPDATE verdicts SET measurements_hash = NULL, evidence_at = NULL, evidence_seq = NULL WHERE ` + replaced,
		} {
			if _, err := tx.ExecContext(ctx, stmt, h.Name, EKHash(h.EKPublic), h.AKPublic); err != nil {
				return fmt.Errorf("admit host %s: drop evidence of the replaced AK: %w", h.Name, err)
			}
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO hosts (`+hostColumns+`, ek_hash)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
			ON CONFLICT (name) DO UPDATE SET
				ek_cert = excluded.ek_cert, ak_public = excluded.ak_public, ak_name = excluded.ak_name,
				url = excluded.url, agent_cert = excluded.agent_cert, updated_at = excluded.updated_at,
				mode = excluded.mode
			WHERE hosts.ek_hash = excluded.ek_hash`,
			h.Name, string(h.State), h.EKPublic, h.EKCert, h.AKPublic, h.AKName, h.URL, h.AgentCert,
			labels, h.Policy, micros(h.CreatedAt), micros(h.UpdatedAt), string(h.Mode.orPull()), EKHash(h.EKPublic))
		if err != nil {
			return fmt.Errorf("admit host %s: %w", h.Name, s.eng.classify(err))
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("admit host %s: %w", h.Name, err)
		} else if n != 1 {
			return fmt.Errorf("admit host %s: bound to another EK: %w", h.Name, ErrConflict)
		}
		if a.Audit != nil {
			if err := s.appendTx(ctx, tx, *a.Audit); err != nil {
				return fmt.Errorf("admit host %s: audit: %w", h.Name, err)
			}
		}
		if a.PendingPoll == nil {
			return nil
		}
		res, err = tx.ExecContext(ctx, `UPDATE pending_hosts SET cert = $1 WHERE poll_hash = $2 AND host = $3 AND ek_hash = $4`,
			h.AgentCert, a.PendingPoll, h.Name, EKHash(h.EKPublic))
		if err == nil {
			err = mustAffect(res)
		}
		if err != nil {
			return fmt.Errorf("admit host %s: settle pending request: %w", h.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM pending_hosts WHERE host = $1 AND poll_hash <> $2`, h.Name, a.PendingPoll); err != nil {
			return fmt.Errorf("admit host %s: drop rival requests: %w", h.Name, err)
		}
		return nil
	})
}

// Pending is a TPM that passed credential activation without a join token
// and waits for an operator's approval. It owns no name: any number of
// TPMs may wait under one name, and a token-backed admission takes the
// name whatever waits. Everything in it but the proven EK/AK binding was
// said by the unauthenticated agent.
type Pending struct {
	PollHash  []byte // SHA-256 of the secret the agent polls with
	Host      string
	EKPublic  []byte
	EKCert    []byte
	AKPublic  []byte
	AKName    []byte
	URL       string
	CSR       []byte
	Source    string // the client address the activation came from
	Cert      []byte // PEM, set when approved
	CreatedAt time.Time
	ExpiresAt time.Time
}

const pendingColumns = `poll_hash, host, ek_public, ek_cert, ak_public, ak_name, url, csr, source, cert, created_at, expires_at`

// PutPending stores p, replacing an earlier request of the same TPM for the
// same name.
func (s *Store) PutPending(ctx context.Context, p Pending) error {
	if len(p.PollHash) == 0 || p.Host == "" || len(p.EKPublic) == 0 {
		return fmt.Errorf("put pending host: %w", invalid("empty poll hash, host name or EK"))
	}
	_, err := s.wdb.ExecContext(ctx, `INSERT INTO pending_hosts (`+pendingColumns+`, ek_hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
		ON CONFLICT (host, ek_hash) DO UPDATE SET
			poll_hash = excluded.poll_hash, ek_cert = excluded.ek_cert, ak_public = excluded.ak_public,
			ak_name = excluded.ak_name, url = excluded.url, csr = excluded.csr, source = excluded.source,
			cert = NULL, created_at = excluded.created_at, expires_at = excluded.expires_at`,
		p.PollHash, p.Host, p.EKPublic, p.EKCert, p.AKPublic, p.AKName, p.URL, p.CSR, p.Source, p.Cert,
		micros(p.CreatedAt), micros(p.ExpiresAt), EKHash(p.EKPublic))
	if err != nil {
		return fmt.Errorf("put pending host %s: %w", p.Host, s.eng.classify(err))
	}
	return nil
}

// ListPending returns the requests not expired at now, by name and age.
func (s *Store) ListPending(ctx context.Context, now time.Time) ([]Pending, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+pendingColumns+` FROM pending_hosts
		WHERE expires_at > $1 AND cert IS NULL ORDER BY host, created_at`, micros(now))
	if err != nil {
		return nil, fmt.Errorf("list pending hosts: %w", err)
	}
	ps, err := collect(rows, scanPending)
	if err != nil {
		return nil, fmt.Errorf("list pending hosts: %w", err)
	}
	return ps, nil
}

// GetPending returns the request of the TPM whose EK hashes to ekHash for
// host, not expired at now, or ErrNotFound.
func (s *Store) GetPending(ctx context.Context, host string, ekHash []byte, now time.Time) (Pending, error) {
	p, err := scanPending(s.wdb.QueryRowContext(ctx, `SELECT `+pendingColumns+` FROM pending_hosts
		WHERE host = $1 AND ek_hash = $2 AND expires_at > $3 AND cert IS NULL`, host, ekHash, micros(now)))
	if err != nil {
		return Pending{}, fmt.Errorf("get pending host %s: %w", host, err)
	}
	return p, nil
}

// PollPending returns the request the agent polls for with pollHash, not
// expired at now, or ErrNotFound. Once approved (Cert set) the request is
// deleted as it is returned: the certificate is handed out once.
func (s *Store) PollPending(ctx context.Context, pollHash []byte, now time.Time) (Pending, error) {
	p, err := scanPending(s.wdb.QueryRowContext(ctx, `DELETE FROM pending_hosts
		WHERE poll_hash = $1 AND cert IS NOT NULL RETURNING `+pendingColumns, pollHash))
	if errors.Is(err, ErrNotFound) {
		p, err = scanPending(s.wdb.QueryRowContext(ctx, `SELECT `+pendingColumns+` FROM pending_hosts
			WHERE poll_hash = $1 AND expires_at > $2`, pollHash, micros(now)))
	}
	if err != nil {
		return Pending{}, fmt.Errorf("poll pending host: %w", err)
	}
	return p, nil
}

// CountWaiting returns how many enrollments in flight and pending requests
// are not expired at now: what an unauthenticated flood can fill.
func (s *Store) CountWaiting(ctx context.Context, now time.Time) (int, error) {
	var n int
	err := s.rdb.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM enrollments WHERE expires_at > $1) +
		(SELECT count(*) FROM pending_hosts WHERE expires_at > $1)`, micros(now)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count waiting enrollments: %w", err)
	}
	return n, nil
}

func scanPending(r scanner) (Pending, error) {
	var p Pending
	var created, expires int64
	err := r.Scan(&p.PollHash, &p.Host, &p.EKPublic, &p.EKCert, &p.AKPublic, &p.AKName, &p.URL, &p.CSR,
		&p.Source, &p.Cert, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return Pending{}, ErrNotFound
	}
	if err != nil {
		return Pending{}, err
	}
	p.CreatedAt, p.ExpiresAt = fromMicros(created), fromMicros(expires)
	return p, nil
}
