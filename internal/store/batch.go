package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"trustpool/internal/verdict"
)

// AllMeasurements calls fn with every host's latest verified measurements
// (see EvidenceRecord), reading them in one query. The measurements bytes
// are valid only during the call. An error from fn stops the scan and is
// returned as is.
func (s *Store) AllMeasurements(ctx context.Context, fn func(host string, measurements []byte, verifiedAt time.Time) error) error {
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
		if err := fn(host, m, fromMicros(at)); err != nil {
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
// PutVerdict does without evidence. It is how a known-good change
// re-evaluates a whole fleet at once. A verdict older than the host's stored
// one is skipped (an attestation recorded meanwhile stands), and so is a
// host that no longer exists; written says which were stored.
func (s *Store) PutVerdicts(ctx context.Context, vs []verdict.Verdict) (written []bool, err error) {
	if len(vs) == 0 {
		return nil, nil
	}
	written = make([]bool, len(vs))
	reasons := make([]any, len(vs))
	for i, v := range vs {
		if v.Host == "" || !v.Level.Valid() {
			return nil, fmt.Errorf("put %d verdicts: %w", len(vs), invalid("verdict of host %q, level %q", v.Host, v.Level))
		}
		var err error
		if reasons[i], err = jsonOrNull(v.Reasons, len(v.Reasons) == 0); err != nil {
			return nil, fmt.Errorf("put %d verdicts: encode reasons of %s: %w", len(vs), v.Host, err)
		}
	}
	lock := lockHosts + s.eng.forUpdate("h", false)
	s.warm(ctx, upsertVerdict, insertHistory)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
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
		type stored struct {
			level verdict.Level
			vtime int64
		}
		prev := make(map[string]stored, len(names))
		rows, err = tx.QueryContext(ctx, `SELECT host, level, vtime FROM verdicts`)
		if err != nil {
			return fmt.Errorf("read previous verdicts: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				h, l string
				t    int64
			)
			if err := rows.Scan(&h, &l, &t); err != nil {
				return fmt.Errorf("read previous verdicts: %w", err)
			}
			prev[h] = stored{verdict.Level(l), t}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read previous verdicts: %w", err)
		}
		for i, v := range vs {
			p, had := prev[v.Host]
			if !exists[v.Host] || (had && p.vtime > micros(v.VTime)) {
				continue // deleted, or attested since: that verdict stands
			}
			if _, err := s.txExec(ctx, tx, upsertVerdict,
				v.Host, string(v.Level), micros(v.VTime), micros(v.Expiry), v.Policy, reasons[i]); err != nil {
				return fmt.Errorf("write verdict of %s: %w", v.Host, err)
			}
			written[i] = true
			if !had || p.level != v.Level {
				if _, err := s.txExec(ctx, tx, insertHistory,
					v.Host, string(v.Level), micros(v.VTime), micros(v.Expiry), v.Policy, reasons[i]); err != nil {
					return fmt.Errorf("append history of %s: %w", v.Host, err)
				}
			}
			prev[v.Host] = stored{v.Level, micros(v.VTime)}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("put %d verdicts: %w", len(vs), err)
	}
	return written, nil
}
