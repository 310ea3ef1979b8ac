package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"trustpool/internal/verdict"
)

// EvidenceRecord is a host's latest verified evidence: what the verifier
// accepted as genuine (signature, nonce, digest and replay checked) and the
// measurements it derived. The store keeps the bytes opaque.
type EvidenceRecord struct {
	Host         string
	Evidence     []byte // the evidence document (JSON)
	Nonce        []byte // the challenge's nonce the quote answered
	Measurements []byte // the measurements the verifier derived (JSON)
	VerifiedAt   time.Time
	Seq          int64  // the attestation's number (verdict.Verdict.Seq)
	ContentHash  []byte // SHA-256 of Evidence, set by the store
}

const verdictColumns = `host, level, vtime, expiry, policy, reasons, seq`

// LatestVerdicts returns the latest verdict of every host that has one, in
// no particular order. It is what the server's verdict cache is rebuilt
// from at start, so it is kept lean: levels and policy names, which repeat
// across hosts, are not allocated per row.
func (s *Store) LatestVerdicts(ctx context.Context) ([]verdict.Verdict, error) {
	// Sizing the result first saves growing a slice of 100,000 verdicts.
	var n int
	if err := s.rdb.QueryRowContext(ctx, `SELECT COUNT(*) FROM verdicts`).Scan(&n); err != nil {
		return nil, fmt.Errorf("latest verdicts: %w", err)
	}
	vs, err := s.queryVerdicts(ctx, n, `SELECT `+verdictColumns+` FROM verdicts`)
	if err != nil {
		return nil, fmt.Errorf("latest verdicts: %w", err)
	}
	return vs, nil
}

// History returns up to limit of the host's level changes, newest first.
func (s *Store) History(ctx context.Context, host string, limit int) ([]verdict.Verdict, error) {
	if err := limitOK(limit); err != nil {
		return nil, fmt.Errorf("history of %s: %w", host, err)
	}
	vs, err := s.queryVerdicts(ctx, min(limit, 100), `SELECT `+verdictColumns+` FROM verdict_history
		WHERE host = $1 ORDER BY id DESC LIMIT $2`, host, limit)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", host, err)
	}
	return vs, nil
}

func (s *Store) queryVerdicts(ctx context.Context, sizeHint int, query string, args ...any) ([]verdict.Verdict, error) {
	rows, err := s.rdb.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var (
		vs            = make([]verdict.Verdict, 0, sizeHint)
		level, policy sql.RawBytes
		vtime, expiry int64
		reasons       sql.RawBytes
		policies      = map[string]string{}
	)
	for rows.Next() {
		var v verdict.Verdict
		if err := rows.Scan(&v.Host, &level, &vtime, &expiry, &policy, &reasons, &v.Seq); err != nil {
			return nil, err
		}
		switch l := verdict.Level(level); l {
		case verdict.Trusted, verdict.Untrusted, verdict.Unknown:
			v.Level = l // the constant: no allocation
		default:
			return nil, fmt.Errorf("verdict of %s: stored level %q", v.Host, level)
		}
		p, ok := policies[string(policy)]
		if !ok {
			p = string(policy)
			policies[p] = p
		}
		v.Policy, v.VTime, v.Expiry = p, fromMicros(vtime), fromMicros(expiry)
		if len(reasons) > 0 {
			if err := json.Unmarshal(reasons, &v.Reasons); err != nil {
				return nil, fmt.Errorf("decode reasons of %s: %w", v.Host, err)
			}
		}
		vs = append(vs, v)
	}
	return vs, rows.Err()
}

// LatestEvidence returns the host's latest verified evidence, or
// ErrNotFound when it has none.
func (s *Store) LatestEvidence(ctx context.Context, host string) (EvidenceRecord, error) {
	e := EvidenceRecord{Host: host}
	var at int64
	err := s.rdb.QueryRowContext(ctx, `SELECT evidence, nonce, measurements, verified_at, seq, content_hash FROM evidence WHERE host = $1`, host).
		Scan(&e.Evidence, &e.Nonce, &e.Measurements, &at, &e.Seq, &e.ContentHash)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return EvidenceRecord{}, fmt.Errorf("latest evidence of %s: %w", host, err)
	}
	e.VerifiedAt = fromMicros(at)
	return e, nil
}
