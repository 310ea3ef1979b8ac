package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"
)

// Leases divide attestation work between server replicas sharing one
// PostgreSQL database: a replica attests the active hosts it holds a lease
// on, renews its leases well before they expire, and claims hosts whose
// lease is free or expired, so a dead replica's hosts are taken over within
// one lease time. The database is the only coordinator. On SQLite (one
// server) the same calls work and one owner simply holds every host.

// ClaimHosts gives owner up to limit active hosts whose lease is free or
// expired at now, leased until now+leaseFor, and returns their names in
// order. Hosts owner already holds unexpired are not returned again (see
// RenewLeases). It is one statement; on PostgreSQL, rows another replica is
// claiming at the same moment are skipped rather than waited for.
func (s *Store) ClaimHosts(ctx context.Context, owner string, now time.Time, leaseFor time.Duration, limit int) ([]string, error) {
	if err := leaseArgs(owner, leaseFor, limit); err != nil {
		return nil, fmt.Errorf("claim hosts for %s: %w", owner, err)
	}
	// The ON CONFLICT … WHERE re-checks expiry against the latest committed
	// lease, so a host claimed by another replica after this statement's
	// snapshot is left alone. "WHERE true" resolves SQLite's parsing
	// ambiguity of INSERT … SELECT … ON CONFLICT.
	rows, err := s.wdb.QueryContext(ctx, `WITH free AS (
			SELECT h.name FROM hosts h LEFT JOIN leases l ON l.host = h.name
			WHERE h.state = 'active' AND (l.host IS NULL OR l.expires_at <= $2)
			ORDER BY h.name LIMIT $4`+s.eng.forUpdate("h", true)+`
		)
		INSERT INTO leases (host, owner, expires_at)
		SELECT name, CAST($1 AS TEXT), CAST($3 AS BIGINT) FROM free WHERE true
		ON CONFLICT (host) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
			WHERE leases.expires_at <= $2
		RETURNING host`,
		owner, micros(now), micros(now.Add(leaseFor)), limit)
	if err != nil {
		return nil, fmt.Errorf("claim hosts for %s: %w", owner, err)
	}
	hosts, err := collectNames(rows)
	if err != nil {
		return nil, fmt.Errorf("claim hosts for %s: %w", owner, err)
	}
	return hosts, nil
}

// RenewLeases extends every lease owner holds on an active host to
// now+leaseFor and returns those hosts in order. A lease that expired but
// was not claimed by another replica is renewed too: owner still held it.
func (s *Store) RenewLeases(ctx context.Context, owner string, now time.Time, leaseFor time.Duration) ([]string, error) {
	if err := leaseArgs(owner, leaseFor, 1); err != nil {
		return nil, fmt.Errorf("renew leases of %s: %w", owner, err)
	}
	rows, err := s.wdb.QueryContext(ctx, `UPDATE leases SET expires_at = $2
		WHERE owner = $1 AND host IN (SELECT name FROM hosts WHERE state = 'active')
		RETURNING host`, owner, micros(now.Add(leaseFor)))
	if err != nil {
		return nil, fmt.Errorf("renew leases of %s: %w", owner, err)
	}
	hosts, err := collectNames(rows)
	if err != nil {
		return nil, fmt.Errorf("renew leases of %s: %w", owner, err)
	}
	return hosts, nil
}

// ReleaseLeases gives up every lease owner holds (at shutdown), so other
// replicas can claim the hosts at once, and withdraws its announcement.
func (s *Store) ReleaseLeases(ctx context.Context, owner string) error {
	for _, q := range []string{`DELETE FROM leases WHERE owner = $1`, `DELETE FROM replicas WHERE owner = $1`} {
		if _, err := s.wdb.ExecContext(ctx, q, owner); err != nil {
			return fmt.Errorf("release leases of %s: %w", owner, err)
		}
	}
	return nil
}

// Census is how the hosts are divided at one moment.
type Census struct {
	Owners int // replicas alive (Announce)
	Active int // active hosts
	Held   int // active hosts with an unexpired lease
}

// Announce records that owner is alive until now+ttl, and returns the
// census at now: how replicas size their fair share.
func (s *Store) Announce(ctx context.Context, owner string, now time.Time, ttl time.Duration) (Census, error) {
	if err := leaseArgs(owner, ttl, 1); err != nil {
		return Census{}, fmt.Errorf("announce %s: %w", owner, err)
	}
	if _, err := s.wdb.ExecContext(ctx, `INSERT INTO replicas (owner, expires_at) VALUES ($1, $2)
		ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at`, owner, micros(now.Add(ttl))); err != nil {
		return Census{}, fmt.Errorf("announce %s: %w", owner, err)
	}
	return s.LeaseCensus(ctx, now)
}

// LeaseCensus counts, at now, the replicas alive and the active hosts,
// held or not.
func (s *Store) LeaseCensus(ctx context.Context, now time.Time) (Census, error) {
	var c Census
	err := s.rdb.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM replicas WHERE expires_at > $1),
		(SELECT COUNT(*) FROM hosts WHERE state = 'active'),
		(SELECT COUNT(*) FROM leases l JOIN hosts h ON h.name = l.host WHERE h.state = 'active' AND l.expires_at > $1)`,
		micros(now)).Scan(&c.Owners, &c.Active, &c.Held)
	if err != nil {
		return Census{}, fmt.Errorf("lease census: %w", err)
	}
	return c, nil
}

// ReleaseHosts gives up owner's leases on hosts, for another replica to
// claim (a replica holding more than its share).
func (s *Store) ReleaseHosts(ctx context.Context, owner string, hosts []string) error {
	for _, h := range hosts {
		if _, err := s.wdb.ExecContext(ctx, `DELETE FROM leases WHERE owner = $1 AND host = $2`, owner, h); err != nil {
			return fmt.Errorf("release lease of %s on %s: %w", owner, h, err)
		}
	}
	return nil
}

func leaseArgs(owner string, leaseFor time.Duration, limit int) error {
	if owner == "" {
		return invalid("empty owner")
	}
	if leaseFor <= 0 {
		return invalid("lease time %v must be positive", leaseFor)
	}
	return limitOK(limit)
}

// collectNames reads a one-column result of names, sorted.
func collectNames(rows *sql.Rows) ([]string, error) {
	names, err := collect(rows, func(r scanner) (string, error) {
		var n string
		return n, r.Scan(&n)
	})
	slices.Sort(names)
	return names, err
}
