package store

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"trustpool/internal/verdict"
)

// TraitChange is a host whose Placement trait must be brought in line with
// its verdict. It is written in the transaction of the level change it
// follows (or by the reconcile that found the host's provider wrong), is
// claimed by one trait sync at a time (on any replica), and is removed once
// applied. There is one row a host: a newer change of the same host bumps
// Gen, so a sync that applied an older state leaves the row for the next
// attempt. The row names no level: the sync applies the host's stored
// verdict as it reads it after the claim.
type TraitChange struct {
	Host         string
	Gen          int64
	Attempts     int // failed applications so far
	LastError    string
	CreatedAt    time.Time // when the oldest change still pending was written
	ClaimedUntil time.Time // the end of the claim ClaimTraitChanges took

	// Level and Expiry are the host's stored verdict, read after the claim
	// (unknown and zero when the host has none or no longer exists).
	Level  verdict.Level
	Expiry time.Time
}

// Trusted reports whether the trait belongs on the host's provider at now:
// only a trusted verdict that has not expired (fail closed).
func (c TraitChange) Trusted(now time.Time) bool {
	return c.Level == verdict.Trusted && now.Before(c.Expiry)
}

// The upsert of trait changes. A newer change makes the row due at once
// but keeps the claim: the sync holding it finds Gen moved and lets it go,
// so two syncs never write one host's trait at the same time.
const (
	insertTraits = `INSERT INTO trait_outbox (host, gen, attempts, next_attempt, claimed_by, claimed_until, last_error, created_at) VALUES `
	traitRow     = "(?, 1, 0, ?, '', 0, '', ?)"
	traitUpdate  = ` ON CONFLICT (host) DO UPDATE SET gen = trait_outbox.gen + 1, attempts = 0,
		next_attempt = excluded.next_attempt, last_error = ''`
	// upsertTrait is the upsert of one change (prepared: the hot path).
	upsertTrait = insertTraits + `($1, 1, 0, $2, '', 0, '', $3)` + traitUpdate
)

// EnqueueTraitChanges writes a trait change for each of hosts, due at at.
func (s *Store) EnqueueTraitChanges(ctx context.Context, hosts []string, at time.Time) error {
	cs := make([]TraitChange, len(hosts))
	for i, h := range hosts {
		cs[i] = TraitChange{Host: h, CreatedAt: at}
	}
	if err := s.inTx(ctx, func(tx *sql.Tx) error { return s.enqueueTraitsTx(ctx, tx, cs) }); err != nil {
		return fmt.Errorf("enqueue %d trait changes: %w", len(hosts), err)
	}
	return nil
}

// enqueueTraitsTx upserts cs (Host and CreatedAt) in tx, a host named
// twice once, with its last time.
func (s *Store) enqueueTraitsTx(ctx context.Context, tx *sql.Tx, cs []TraitChange) error {
	if len(cs) == 0 {
		return nil
	}
	at := make(map[string]int64, len(cs))
	hosts := make([]string, 0, len(cs))
	for _, c := range cs {
		if c.Host == "" {
			return invalid("trait change of an empty host name")
		}
		if _, ok := at[c.Host]; !ok {
			hosts = append(hosts, c.Host)
		}
		at[c.Host] = micros(c.CreatedAt)
	}
	rows := s.newRowBatch(tx, upsertTrait, insertTraits, traitRow, traitUpdate, true)
	for _, h := range hosts {
		if err := rows.add(ctx, h, h, at[h], at[h]); err != nil {
			return fmt.Errorf("write trait changes: %w", err)
		}
	}
	if err := rows.close(ctx); err != nil {
		return fmt.Errorf("write trait changes: %w", err)
	}
	return nil
}

// ClaimTraitChanges gives owner up to limit trait changes due at now and
// not claimed, claimed until now+hold, with each host's stored verdict. A
// change another replica claims at the same moment is skipped, not waited
// for. The caller then calls TraitApplied or TraitFailed for each; a change
// it never finishes is due again when the claim ends.
func (s *Store) ClaimTraitChanges(ctx context.Context, owner string, now time.Time, hold time.Duration, limit int) ([]TraitChange, error) {
	if err := leaseArgs(owner, hold, limit); err != nil {
		return nil, fmt.Errorf("claim trait changes: %w", err)
	}
	rows, err := s.wdb.QueryContext(ctx, `UPDATE trait_outbox SET claimed_by = $1, claimed_until = $3
		WHERE host IN (SELECT host FROM trait_outbox WHERE next_attempt <= $2 AND claimed_until <= $2
			ORDER BY next_attempt, host LIMIT $4`+s.eng.forUpdate("trait_outbox", true)+`)
		RETURNING host, gen, attempts, last_error, created_at, claimed_until`,
		owner, micros(now), micros(now.Add(hold)), limit)
	if err != nil {
		return nil, fmt.Errorf("claim trait changes: %w", err)
	}
	cs, err := collect(rows, func(r scanner) (TraitChange, error) {
		var c TraitChange
		var created, until int64
		err := r.Scan(&c.Host, &c.Gen, &c.Attempts, &c.LastError, &created, &until)
		c.CreatedAt, c.ClaimedUntil, c.Level = fromMicros(created), fromMicros(until), verdict.Unknown
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim trait changes: %w", err)
	}
	if len(cs) == 0 {
		return nil, nil
	}
	slices.SortFunc(cs, func(a, b TraitChange) int { return cmp.Compare(a.Host, b.Host) })
	// The verdicts are read in a statement of their own, after the claim:
	// under READ COMMITTED it sees every transaction that committed before
	// the claim returned, so a Gen is never paired with a verdict older
	// than the one written with it.
	args := make([]any, len(cs))
	for i, c := range cs {
		args[i] = c.Host
	}
	vrows, err := s.rdb.QueryContext(ctx, `SELECT host, level, expiry FROM verdicts WHERE host IN (`+s.eng.rows("?", len(cs))+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("claim trait changes: read verdicts: %w", err)
	}
	defer vrows.Close()
	for vrows.Next() {
		var h, l string
		var exp int64
		if err := vrows.Scan(&h, &l, &exp); err != nil {
			return nil, fmt.Errorf("claim trait changes: read verdicts: %w", err)
		}
		if i, ok := slices.BinarySearchFunc(cs, h, func(c TraitChange, h string) int { return cmp.Compare(c.Host, h) }); ok {
			cs[i].Level, cs[i].Expiry = verdict.Level(l), fromMicros(exp)
		}
	}
	if err := vrows.Err(); err != nil {
		return nil, fmt.Errorf("claim trait changes: read verdicts: %w", err)
	}
	return cs, nil
}

// TraitApplied removes c, applied by owner, unless a newer change of the
// host came meanwhile: then the claim is let go and the newer change is due
// at once.
func (s *Store) TraitApplied(ctx context.Context, owner string, c TraitChange) error {
	res, err := s.wdb.ExecContext(ctx, `DELETE FROM trait_outbox WHERE host = $1 AND gen = $2`, c.Host, c.Gen)
	if err = s.settleTrait(ctx, owner, c.Host, res, err); err != nil {
		return fmt.Errorf("trait change of %s applied: %w", c.Host, err)
	}
	return nil
}

// TraitFailed records that owner failed to apply c and when to try again
// (unless a newer change of the host came meanwhile, which is due at once).
func (s *Store) TraitFailed(ctx context.Context, owner string, c TraitChange, next time.Time, lastErr string) error {
	res, err := s.wdb.ExecContext(ctx, `UPDATE trait_outbox SET attempts = attempts + 1, next_attempt = $3,
		last_error = $4, claimed_by = '', claimed_until = 0
		WHERE host = $1 AND gen = $2 AND claimed_by = $5`, c.Host, c.Gen, micros(next), lastErr, owner)
	if err = s.settleTrait(ctx, owner, c.Host, res, err); err != nil {
		return fmt.Errorf("trait change of %s failed: %w", c.Host, err)
	}
	return nil
}

// ReleaseTraitChanges lets go of owner's claims on hosts' changes, which
// are then due again at once (a sync stopping, or a batch it cannot finish
// within the claim).
func (s *Store) ReleaseTraitChanges(ctx context.Context, owner string, hosts []string) error {
	for _, h := range hosts {
		if err := s.releaseTrait(ctx, owner, h); err != nil {
			return fmt.Errorf("release trait change of %s: %w", h, err)
		}
	}
	return nil
}

// settleTrait finishes a write to owner's claimed change of host (res,
// err): one that matched no row, because a newer change of the host came
// meanwhile, lets the claim go, so that the newer change is due at once.
func (s *Store) settleTrait(ctx context.Context, owner, host string, res sql.Result, err error) error {
	if err != nil {
		return err
	}
	if err = mustAffect(res); errors.Is(err, ErrNotFound) {
		return s.releaseTrait(ctx, owner, host)
	}
	return err
}

// releaseTrait ends owner's claim on host's change; a change someone else
// has claimed since (owner's claim lapsed) is left alone.
func (s *Store) releaseTrait(ctx context.Context, owner, host string) error {
	_, err := s.wdb.ExecContext(ctx, `UPDATE trait_outbox SET claimed_by = '', claimed_until = 0
		WHERE host = $1 AND claimed_by = $2`, host, owner)
	return err
}

// Depth is how much the outboxes hold that consumers have not yet applied.
type Depth struct {
	Webhooks int // notifications not yet delivered
	Traits   int // trait changes not yet applied
}

// OutboxDepth counts the rows waiting in the webhook and trait outboxes
// (claimed, due or backing off).
func (s *Store) OutboxDepth(ctx context.Context) (Depth, error) {
	var d Depth
	if err := s.rdb.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM outbox), (SELECT COUNT(*) FROM trait_outbox)`).
		Scan(&d.Webhooks, &d.Traits); err != nil {
		return Depth{}, fmt.Errorf("outbox depth: %w", err)
	}
	return d, nil
}
