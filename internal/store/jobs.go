package store

import (
	"context"
	"fmt"
	"time"
)

// Jobs are periodic work that one replica at a time must do (the full
// Placement reconcile). A replica runs a job when ClaimRun moves its next
// run forward; the others, asking in the same period, are refused. The
// database is the only coordinator: there is no leader, and a replica that
// dies mid-run leaves the job to whoever asks after the period.

// ClaimRun reports whether owner runs job now: it does when the job has
// never run or its next run is due at now, and the next run is then
// now+every.
func (s *Store) ClaimRun(ctx context.Context, job, owner string, now time.Time, every time.Duration) (bool, error) {
	if job == "" {
		return false, fmt.Errorf("claim run: %w", invalid("empty job name"))
	}
	if err := leaseArgs(owner, every, 1); err != nil {
		return false, fmt.Errorf("claim run of %s: %w", job, err)
	}
	// ON CONFLICT … WHERE is checked against the latest committed row, so
	// of replicas asking at the same moment exactly one is returned a row.
	rows, err := s.wdb.QueryContext(ctx, `INSERT INTO jobs (name, owner, next_run) VALUES ($1, $2, $4)
		ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, next_run = excluded.next_run
			WHERE jobs.next_run <= $3
		RETURNING name`, job, owner, micros(now), micros(now.Add(every)))
	if err != nil {
		return false, fmt.Errorf("claim run of %s: %w", job, err)
	}
	names, err := collectNames(rows)
	if err != nil {
		return false, fmt.Errorf("claim run of %s: %w", job, err)
	}
	return len(names) == 1, nil
}

// ReleaseRun makes job due at once if owner ran it last (a replica
// stopping), so that the next replica to ask runs it without waiting out
// the period.
func (s *Store) ReleaseRun(ctx context.Context, job, owner string) error {
	if _, err := s.wdb.ExecContext(ctx, `UPDATE jobs SET next_run = 0 WHERE name = $1 AND owner = $2`, job, owner); err != nil {
		return fmt.Errorf("release run of %s: %w", job, err)
	}
	return nil
}
