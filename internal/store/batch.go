package store

import (
	"context"
	"database/sql"
	"fmt"

	"trustpool/internal/verdict"
)

// AllMeasurements returns every host's latest verified measurements in one
// query, calling fn for each row (the bytes are only valid during the call).
func (s *Store) AllMeasurements(ctx context.Context, fn func(host string, measurements []byte, verifiedAt int64) error) error {
	rows, err := s.rdb.QueryContext(ctx, `SELECT host, measurements, verified_at FROM evidence`)
	if err != nil {
		return fmt.Errorf("all measurements: %w", err)
	}
	defer rows.Close()
	var (
		host string
		m    sql.RawBytes
		at   int64
	)
	for rows.Next() {
		if err := rows.Scan(&host, &m, &at); err != nil {
			return fmt.Errorf("all measurements: %w", err)
		}
		if err := fn(host, m, at); err != nil {
			return err
		}
	}
	return rows.Err()
}

// PutVerdicts makes each of vs the latest verdict of its host in one
// transaction, appending to a host's history when its level changed, as
// PutVerdict does without evidence. Hosts that no longer exist are skipped.
// It is how a known-good change re-evaluates a whole fleet at once.
func (s *Store) PutVerdicts(ctx context.Context, vs []verdict.Verdict) error {
	if len(vs) == 0 {
		return nil
	}
	prev := make(map[string]verdict.Level, len(vs))
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT v.host, v.level FROM verdicts v`+s.eng.forUpdate("v", false))
		if err != nil {
			return fmt.Errorf("read previous verdicts: %w", err)
		}
		for rows.Next() {
			var h, l string
			if err := rows.Scan(&h, &l); err != nil {
				rows.Close()
				return err
			}
			prev[h] = verdict.Level(l)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for _, v := range vs {
			if v.Host == "" || !v.Level.Valid() {
				return invalid("verdict of host %q, level %q", v.Host, v.Level)
			}
			reasons, err := jsonOrNull(v.Reasons, len(v.Reasons) == 0)
			if err != nil {
				return fmt.Errorf("encode reasons of %s: %w", v.Host, err)
			}
			res, err := s.txExec(ctx, tx, `INSERT INTO verdicts (host, level, vtime, expiry, policy, reasons)
				SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM hosts WHERE name = $1)
				ON CONFLICT (host) DO UPDATE SET level = excluded.level, vtime = excluded.vtime,
					expiry = excluded.expiry, policy = excluded.policy, reasons = excluded.reasons`,
				v.Host, string(v.Level), micros(v.VTime), micros(v.Expiry), v.Policy, reasons)
			if err != nil {
				return fmt.Errorf("write verdict of %s: %w", v.Host, err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				continue // the host was deleted meanwhile
			}
			if p, ok := prev[v.Host]; !ok || p != v.Level {
				if _, err := s.txExec(ctx, tx, `INSERT INTO verdict_history (host, level, vtime, expiry, policy, reasons)
					VALUES ($1, $2, $3, $4, $5, $6)`,
					v.Host, string(v.Level), micros(v.VTime), micros(v.Expiry), v.Policy, reasons); err != nil {
					return fmt.Errorf("append history of %s: %w", v.Host, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put %d verdicts: %w", len(vs), err)
	}
	return nil
}
