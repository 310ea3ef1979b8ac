package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"trustpool/internal/verdict"
)

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
