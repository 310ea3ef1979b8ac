package store_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"trustpool/internal/store"
	"trustpool/internal/store/pgtest"
	"trustpool/internal/store/storetest"
)

// open returns a store on a new database of c.
func open(t *testing.T, c *pgtest.Cluster) *store.Store {
	t.Helper()
	return openDSN(t, c.NewDatabase(t))
}

func openDSN(tb testing.TB, dsn string) *store.Store {
	tb.Helper()
	s, err := store.Open(tb.Context(), dsn)
	if err != nil {
		tb.Fatalf("open %s: %v", dsn, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return s
}

func TestPostgresConformance(t *testing.T) {
	c := pgtest.Start(t)
	storetest.Run(t, func(t *testing.T) *store.Store { return open(t, c) })
}

// TestPostgresReplicas runs several stores on one database, as several
// server replicas do: they migrate together at start, then share leases and
// the audit chain.
func TestPostgresReplicas(t *testing.T) {
	c := pgtest.Start(t)
	dsn := c.NewDatabase(t)
	const replicas = 4
	stores := make([]*store.Store, replicas)
	var wg sync.WaitGroup
	errs := make([]error, replicas)
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = store.Open(t.Context(), dsn) })
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("replica %d: open: %v", i, errs[i])
		}
		t.Cleanup(func() { s.Close() })
	}
	ctx := t.Context()
	now := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	const hosts = 40
	for i := range hosts {
		h := store.Host{Name: fmt.Sprintf("node%02d", i), State: store.HostActive, EKPublic: []byte{byte(i)}}
		if err := stores[i%replicas].PutHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	owner := make(map[string]int)
	var mu sync.Mutex
	for i, s := range stores {
		wg.Go(func() {
			for {
				got, err := s.ClaimHosts(ctx, fmt.Sprint("replica-", i), now, time.Minute, 3)
				if err == nil {
					err = s.Append(ctx, store.Entry{Time: now, Actor: fmt.Sprint("replica-", i), Action: "lease.claim",
						Subject: fmt.Sprint(got)})
				}
				if err != nil {
					t.Errorf("replica %d: %v", i, err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, h := range got {
					if o, dup := owner[h]; dup {
						t.Errorf("%s claimed by replicas %d and %d", h, o, i)
					}
					owner[h] = i
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(owner) != hosts {
		t.Fatalf("%d hosts claimed, want %d", len(owner), hosts)
	}
	entries, err := stores[0].ListAudit(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.VerifyChain(entries); err != nil {
		t.Fatalf("replicas forked the audit chain: %v", err)
	}
}
