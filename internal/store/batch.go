package store

import (
	"context"
	"database/sql"
	"fmt"

	"trustpool/internal/verdict"
)

// AllMeasurements calls fn with every host's latest verified measurements
// (see EvidenceRecord), reading them in one query. The measurements bytes
// are valid only during the call; verifiedAt is in microseconds since the
// Unix epoch (time.UnixMicro). An error from fn stops the scan and is
// returned as is.
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
	if err := rows.Err(); err != nil {
		return fmt.Errorf("all measurements: %w", err)
	}
	return nil
}

// lockHosts locks every host row, in name order, until commit.
const lockHosts = `SELECT name FROM hosts h ORDER BY name`

// PutVerdicts makes each of vs the latest verdict of its host in one
// transaction, appending to a host's history when its level changed, as
// PutVerdict does without evidence. Hosts that no longer exist are skipped.
// It is how a known-good change re-evaluates a whole fleet at once.
func (s *Store) PutVerdicts(ctx context.Context, vs []verdict.Verdict) error {
	if len(vs) == 0 {
		return nil
	}
	reasons := make([]any, len(vs))
	for i, v := range vs {
		if v.Host == "" || !v.Level.Valid() {
			return fmt.Errorf("put %d verdicts: %w", len(vs), invalid("verdict of host %q, level %q", v.Host, v.Level))
		}
		var err error
		if reasons[i], err = jsonOrNull(v.Reasons, len(v.Reasons) == 0); err != nil {
			return fmt.Errorf("put %d verdicts: encode reasons of %s: %w", len(vs), v.Host, err)
		}
	}
	lock := lockHosts + s.eng.forUpdate("h", false)
	s.warm(ctx, upsertVerdict, insertHistory)
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		// Lock the hosts first, as PutVerdict does, so that a concurrent
		// PutVerdict of one of them goes entirely before or after this
		// transaction and the previous levels read next are exact.
		rows, err := tx.QueryContext(ctx, lock)
		if err != nil {
			return fmt.Errorf("lock hosts: %w", err)
		}
		names, err := collectNames(rows)
		if err != nil {
			return fmt.Errorf("lock hosts: %w", err)
		}
		exists := make(map[string]bool, len(names))
		for _, n := range names {
			exists[n] = true
		}
		prev := make(map[string]verdict.Level, len(names))
		rows, err = tx.QueryContext(ctx, `SELECT host, level FROM verdicts`)
		if err != nil {
			return fmt.Errorf("read previous verdicts: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var h, l string
			if err := rows.Scan(&h, &l); err != nil {
				return fmt.Errorf("read previous verdicts: %w", err)
			}
			prev[h] = verdict.Level(l)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read previous verdicts: %w", err)
		}
		for i, v := range vs {
			if !exists[v.Host] {
				continue // deleted meanwhile
			}
			if _, err := s.txExec(ctx, tx, upsertVerdict,
				v.Host, string(v.Level), micros(v.VTime), micros(v.Expiry), v.Policy, reasons[i]); err != nil {
				return fmt.Errorf("write verdict of %s: %w", v.Host, err)
			}
			if p, ok := prev[v.Host]; !ok || p != v.Level {
				if _, err := s.txExec(ctx, tx, insertHistory,
					v.Host, string(v.Level), micros(v.VTime), micros(v.Expiry), v.Policy, reasons[i]); err != nil {
					return fmt.Errorf("append history of %s: %w", v.Host, err)
				}
			}
			prev[v.Host] = v.Level
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put %d verdicts: %w", len(vs), err)
	}
	return nil
}
