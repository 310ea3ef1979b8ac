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
}

// The statements of PutVerdict, the hottest write path.
const (
	selectPrevLevel = `SELECT level FROM verdicts WHERE host = $1`
	upsertVerdict   = `INSERT INTO verdicts (host, level, vtime, expiry, policy, reasons)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (host) DO UPDATE SET level = excluded.level, vtime = excluded.vtime,
			expiry = excluded.expiry, policy = excluded.policy, reasons = excluded.reasons`
	insertHistory = `INSERT INTO verdict_history (host, level, vtime, expiry, policy, reasons)
		VALUES ($1, $2, $3, $4, $5, $6)`
	upsertEvidence = `INSERT INTO evidence (host, evidence, nonce, measurements, verified_at)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (host) DO UPDATE SET evidence = excluded.evidence, nonce = excluded.nonce,
			measurements = excluded.measurements, verified_at = excluded.verified_at`
)

// PutVerdict makes v the latest verdict of v.Host and, when ev is not nil,
// ev its latest verified evidence, in one transaction. It appends v to the
// host's history when the level changed or when it is the host's first
// verdict. prev is the level stored before (verdict.Unknown for none), as
// stored: expiry is not applied. A host that does not exist is ErrNotFound.
func (s *Store) PutVerdict(ctx context.Context, v verdict.Verdict, ev *EvidenceRecord) (prev verdict.Level, err error) {
	if v.Host == "" || !v.Level.Valid() {
		return "", fmt.Errorf("put verdict: %w", invalid("host %q, level %q", v.Host, v.Level))
	}
	if ev != nil && ev.Host != v.Host {
		return "", fmt.Errorf("put verdict for %s: %w", v.Host, invalid("evidence of host %q", ev.Host))
	}
	reasons, err := jsonOrNull(v.Reasons, len(v.Reasons) == 0)
	if err != nil {
		return "", fmt.Errorf("put verdict for %s: encode reasons: %w", v.Host, err)
	}
	lockHost := `SELECT 1 FROM hosts h WHERE h.name = $1` + s.eng.forUpdate("h", false)
	s.warm(ctx, lockHost, selectPrevLevel, upsertVerdict, insertHistory, upsertEvidence)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		// Lock the host's row first: concurrent writers of one host's
		// verdict take turns, so prev and the history are exact. The
		// previous level is read by a second statement, whose snapshot
		// (READ COMMITTED) is taken after the lock was granted.
		var one int
		err := s.txQueryRow(ctx, tx, lockHost, v.Host).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("lock host: %w", err)
		}
		var have sql.NullString
		err = s.txQueryRow(ctx, tx, selectPrevLevel, v.Host).Scan(&have)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read previous verdict: %w", err)
		}
		prev = verdict.Unknown
		if have.Valid {
			prev = verdict.Level(have.String)
		}
		if _, err := s.txExec(ctx, tx, upsertVerdict,
			v.Host, string(v.Level), micros(v.VTime), micros(v.Expiry), v.Policy, reasons); err != nil {
			return fmt.Errorf("write verdict: %w", err)
		}
		if !have.Valid || prev != v.Level {
			if _, err := s.txExec(ctx, tx, insertHistory,
				v.Host, string(v.Level), micros(v.VTime), micros(v.Expiry), v.Policy, reasons); err != nil {
				return fmt.Errorf("append history: %w", err)
			}
		}
		if ev == nil {
			return nil
		}
		if _, err := s.txExec(ctx, tx, upsertEvidence,
			ev.Host, ev.Evidence, ev.Nonce, ev.Measurements, micros(ev.VerifiedAt)); err != nil {
			return fmt.Errorf("write evidence: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("put verdict for %s: %w", v.Host, err)
	}
	return prev, nil
}

const verdictColumns = `host, level, vtime, expiry, policy, reasons`

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
		if err := rows.Scan(&v.Host, &level, &vtime, &expiry, &policy, &reasons); err != nil {
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
	err := s.rdb.QueryRowContext(ctx, `SELECT evidence, nonce, measurements, verified_at FROM evidence WHERE host = $1`, host).
		Scan(&e.Evidence, &e.Nonce, &e.Measurements, &at)
	if errors.Is(err, sql.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return EvidenceRecord{}, fmt.Errorf("latest evidence of %s: %w", host, err)
	}
	e.VerifiedAt = fromMicros(at)
	return e, nil
}
