package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// AllMeasurements calls fn with every host's latest verified measurements
// (see EvidenceRecord), reading them in one query. The measurements bytes
// are valid only during the call. An error from fn stops the scan and is
// returned as is.
func (s *Store) AllMeasurements(ctx context.Context, fn func(host string, measurements []byte, verifiedAt time.Time, seq int64) error) error {
	rows, err := s.rdb.QueryContext(ctx, `SELECT e.host, e.measurements, `+latestVerification+`
		FROM evidence e LEFT JOIN verdicts v ON v.host = e.host`)
	if err != nil {
		return fmt.Errorf("all measurements: %w", err)
	}
	defer rows.Close()
	var (
		host string
		m    sql.RawBytes
		at   int64
		seq  int64
	)
	for rows.Next() {
		if err := rows.Scan(&host, &m, &at, &seq); err != nil {
			return fmt.Errorf("all measurements: %w", err)
		}
		if err := fn(host, m, fromMicros(at), seq); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("all measurements: %w", err)
	}
	return nil
}
