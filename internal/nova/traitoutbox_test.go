package nova

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"trustpool/internal/nova/placementtest"
	"trustpool/internal/store"
	"trustpool/internal/store/pgtest"
	"trustpool/internal/verdict"
)

// outboxEmpty reports whether every trait change has been applied (none
// claimed, due or backing off): after it, no sync has a write in flight.
func outboxEmpty(t *testing.T, st *store.Store) func() bool {
	return func() bool {
		d, err := st.OutboxDepth(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return d.Traits == 0
	}
}

// TestTraitOutbox: trait changes are applied from the store's outbox, so
// none waits for the reconcile (an hour away in every case here).
func TestTraitOutbox(t *testing.T) {
	p := placementtest.Start(t)
	cfg := func(t *testing.T, w *placementtest.Wire) TraitSyncConfig {
		return TraitSyncConfig{Endpoint: p.URL, Token: p.Token, HTTPClient: &http.Client{Transport: w, Timeout: 10 * time.Second},
			Interval: time.Hour, Coalesce: 10 * time.Millisecond, Poll: 100 * time.Millisecond, Logger: testLogger(t)}
	}

	t.Run("a change written while no sync ran is applied at start", func(t *testing.T) {
		rp := providers(t, p, "o1", "o2")
		// The trait exists (as after an earlier run), so that candidates
		// can be asked for before the sync has started.
		if status, raw := p.Request(t, http.MethodPut, "traits/"+DefaultTrait, nil, nil); status/100 != 2 {
			t.Fatalf("create trait: %d %s", status, raw)
		}
		hs := newHostStore(t, map[string]verdict.Level{"o1": verdict.Trusted, "o2": verdict.Untrusted})
		// Another replica reconciled a moment ago: this sync's start does
		// not, so only the outbox can mark o1.
		if ok, err := hs.st.ClaimRun(t.Context(), reconcileJob, "another replica", time.Now(), time.Hour); err != nil || !ok {
			t.Fatalf("claim the reconcile for another replica: %v %v", ok, err)
		}
		w := placementtest.NewWire(p.Client.Transport)
		runSync(t, newSync(t, cfg(t, w), hs))
		waitFor(t, "o1 marked from the outbox", candidatesAre(t, p, rp, "o1"))
		waitFor(t, "the outbox applied", outboxEmpty(t, hs.st))
		if _, _, listings := w.Counts(); listings != 0 {
			t.Fatalf("%d full listings: the sync reconciled although another replica had", listings)
		}
	})

	t.Run("a stopped sync gives the reconcile back", func(t *testing.T) {
		hs := newHostStore(t, nil)
		w := placementtest.NewWire(p.Client.Transport)
		first := newSync(t, cfg(t, w), hs)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- first.Run(ctx) }()
		waitFor(t, "the first sync's start reconcile", func() bool { _, _, n := w.Counts(); return n == 1 })
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// Its interval has not passed, but it gave the run back: the next
		// server to start (a restart) reconciles at once.
		runSync(t, newSync(t, cfg(t, w), hs))
		waitFor(t, "the next sync's start reconcile", func() bool { _, _, n := w.Counts(); return n == 2 })
	})

	t.Run("Placement unreachable: retried and applied when it is back", func(t *testing.T) {
		rp := providers(t, p, "u1", "u2")
		hs := newHostStore(t, map[string]verdict.Level{"u1": verdict.Trusted, "u2": verdict.Trusted})
		w := placementtest.NewWire(p.Client.Transport)
		var failed atomic.Int64
		c := cfg(t, w)
		c.Failed = func(pass string) {
			if pass == "changes" {
				failed.Add(1)
			}
		}
		s := newSync(t, c, hs)
		runSync(t, s)
		waitFor(t, "u1 and u2 marked", candidatesAre(t, p, rp, "u1", "u2"))
		waitFor(t, "the outbox applied", outboxEmpty(t, hs.st))

		w.Down.Store(true)
		hs.set("u1", verdict.Untrusted)
		s.Wake()
		waitFor(t, "a failed attempt", func() bool { return failed.Load() > 0 })
		// A look at the outbox: claim what is due within the hour (u1's
		// change, backing off), then let it go again.
		cs, err := hs.st.ClaimTraitChanges(t.Context(), "observer", time.Now().Add(time.Hour), time.Microsecond, 10)
		if err != nil {
			t.Fatal(err)
		}
		if err := hs.st.ReleaseTraitChanges(t.Context(), "observer", []string{"u1"}); err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 || cs[0].Host != "u1" || cs[0].Attempts == 0 || !strings.Contains(cs[0].LastError, "unreachable") {
			t.Fatalf("outbox while Placement is unreachable: %+v, want u1's change with a failed attempt", cs)
		}
		w.Down.Store(false)
		waitFor(t, "u1's trait removed once Placement is back", candidatesAre(t, p, rp, "u2"))
		waitFor(t, "the outbox applied", outboxEmpty(t, hs.st))
	})
}

// TestTraitSyncReplicas: three syncs, as three server replicas run them,
// share one PostgreSQL database and one Placement. Each change is applied
// by one of them, each level change is written to Placement exactly once
// (counted at the wire and by the providers' generations, which Placement
// bumps on every write), and the start reconcile runs on one of them only.
func TestTraitSyncReplicas(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDatabase(t)
	p := placementtest.Start(t)
	names := []string{"r1", "r2", "r3", "r4", "r5", "r6"}
	rp := providers(t, p, names...)
	gen0 := map[string]int{}
	for _, n := range names {
		_, gen0[n] = p.Traits(t, rp[n])
	}
	recorder := openHostStore(t, dsn, nil)
	w := placementtest.NewWire(p.Client.Transport)
	var syncs []*TraitSync
	for i := range 3 {
		hs := openHostStore(t, dsn, nil) // a replica's own connections; its levels follow nothing
		s := newSync(t, TraitSyncConfig{Endpoint: p.URL, Token: p.Token, HTTPClient: &http.Client{Transport: w, Timeout: 10 * time.Second},
			Interval: time.Hour, Coalesce: time.Millisecond, Poll: 20 * time.Millisecond, Owner: fmt.Sprint("replica-", i), Logger: testLogger(t)}, hs)
		runSync(t, s)
		syncs = append(syncs, s)
	}
	// Every replica is woken for every change, as if each had recorded
	// some: the claims, not the wake-ups, decide who writes.
	changes := map[string]int{}        // changes written a host
	last := map[string]verdict.Level{} // its level (none: unknown)
	record := func(levels map[string]verdict.Level) {
		for _, n := range slices.Sorted(maps.Keys(levels)) {
			recorder.set(n, levels[n])
			if levels[n] != cmp.Or(last[n], verdict.Unknown) { // a level change writes one
				changes[n]++
			}
			last[n] = levels[n]
		}
		for _, s := range syncs {
			s.Wake()
		}
	}
	writes := map[string]int{}
	check := func(what string) {
		t.Helper()
		waitFor(t, "the outbox applied: "+what, outboxEmpty(t, recorder.st))
		puts, lookups, _ := w.Counts()
		for _, n := range names {
			// Each change is applied by one replica: one look-up of its
			// provider (a host's changes are recorded here only once the
			// last was applied, so none is folded into another).
			if lookups[n] != changes[n] {
				t.Errorf("%s: %s's changes applied %d times, want %d", what, n, lookups[n], changes[n])
			}
			if puts[rp[n]] != writes[n] {
				t.Errorf("%s: %s's trait written %d times, want %d", what, n, puts[rp[n]], writes[n])
			}
			if _, gen := p.Traits(t, rp[n]); gen != gen0[n]+writes[n] {
				t.Errorf("%s: %s's provider generation %d, want %d (one bump a write)", what, n, gen, gen0[n]+writes[n])
			}
		}
	}

	// The start reconcile first: one that read the levels after a verdict
	// below and Placement before its change was applied would find drift
	// and look the host up once more (and write nothing twice).
	waitFor(t, "the start reconcile", func() bool { return w.TraitListings() == 1 })
	record(map[string]verdict.Level{"r1": verdict.Trusted, "r2": verdict.Trusted, "r3": verdict.Trusted, "r4": verdict.Untrusted, "r5": verdict.Trusted})
	waitFor(t, "r1, r2, r3, r5 marked", candidatesAre(t, p, rp, "r1", "r2", "r3", "r5"))
	for _, n := range []string{"r1", "r2", "r3", "r5"} {
		writes[n]++
	}
	check("first verdicts")
	if _, _, listings := w.Counts(); listings != 1 {
		t.Errorf("%d full listings at start, want 1: one replica reconciles", listings)
	}

	record(map[string]verdict.Level{"r1": verdict.Untrusted, "r4": verdict.Trusted, "r6": verdict.Unknown})
	waitFor(t, "r1 out, r4 in", candidatesAre(t, p, rp, "r2", "r3", "r4", "r5"))
	writes["r1"]++
	writes["r4"]++
	check("a flip each way")

	record(map[string]verdict.Level{"r6": verdict.Trusted})
	waitFor(t, "r6 in", candidatesAre(t, p, rp, "r2", "r3", "r4", "r5", "r6"))
	writes["r6"]++
	check("a host's first trusted verdict after an unknown one")
}
