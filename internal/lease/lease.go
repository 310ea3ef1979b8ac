// Package lease divides the hosts between server replicas that share one
// database. Each replica holds leases on about its fair share of the
// active hosts (hosts ÷ replicas holding leases), renews them a few times
// per lease time, claims hosts whose lease is free or expired (a dead
// replica's, within one lease time) and gives up what is beyond its share
// when another replica joins. The database is the only coordinator; on
// SQLite the one server holds every host.
package lease

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"trustpool/internal/store"
)

// Store is what a Keeper needs (package store).
type Store interface {
	ClaimHosts(ctx context.Context, owner string, now time.Time, leaseFor time.Duration, limit int) ([]string, error)
	RenewLeases(ctx context.Context, owner string, now time.Time, leaseFor time.Duration) ([]string, error)
	ReleaseLeases(ctx context.Context, owner string) error
	ReleaseHosts(ctx context.Context, owner string, hosts []string) error
	Announce(ctx context.Context, owner string, now time.Time, ttl time.Duration) (store.Census, error)
}

// Config configures a Keeper.
type Config struct {
	Store Store
	Owner string        // this replica, unique among the replicas
	For   time.Duration // lease time (default 30 s); renewed every third of it
	Now   func() time.Time
	// Held is called with the hosts this replica holds after every round
	// (the integrity service attests exactly these).
	Held func(hosts []string)
	Log  *slog.Logger
}

// Keeper holds this replica's leases.
type Keeper struct{ cfg Config }

// New returns a Keeper.
func New(cfg Config) *Keeper {
	if cfg.For <= 0 {
		cfg.For = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Keeper{cfg: cfg}
}

// Run keeps the leases until ctx ends, then releases them so that the
// other replicas take the hosts over at once.
func (k *Keeper) Run(ctx context.Context) error {
	t := time.NewTicker(k.cfg.For / 3)
	defer t.Stop()
	for {
		if held, err := k.Round(ctx); err != nil {
			if ctx.Err() == nil {
				k.cfg.Log.Error("leases", "err", err)
			}
		} else {
			k.cfg.Held(held)
		}
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return k.cfg.Store.ReleaseLeases(rctx, k.cfg.Owner)
		case <-t.C:
		}
	}
}

// Round renews, claims up to the fair share, releases what is beyond it,
// and returns the hosts held.
func (k *Keeper) Round(ctx context.Context) ([]string, error) {
	s, now := k.cfg.Store, k.cfg.Now()
	held, err := s.RenewLeases(ctx, k.cfg.Owner, now, k.cfg.For)
	if err != nil {
		return nil, err
	}
	c, err := s.Announce(ctx, k.cfg.Owner, now, k.cfg.For)
	if err != nil {
		return nil, err
	}
	owners := max(c.Owners, 1)
	share := (c.Active + owners - 1) / owners
	switch {
	case len(held) < share:
		got, err := s.ClaimHosts(ctx, k.cfg.Owner, now, k.cfg.For, share-len(held))
		if err != nil {
			return nil, err
		}
		held = append(held, got...)
		slices.Sort(held)
	case len(held) > share+1: // one over is not worth the churn
		extra := held[share:]
		if err := s.ReleaseHosts(ctx, k.cfg.Owner, extra); err != nil {
			return nil, fmt.Errorf("release beyond the share: %w", err)
		}
		held = held[:share]
	}
	return held, nil
}
