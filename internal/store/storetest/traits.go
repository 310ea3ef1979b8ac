package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// withTrait is the consequences of a recorder with Placement configured:
// every level change writes the host's trait change.
func withTrait(v verdict.Verdict, _ verdict.Level) store.Transition {
	return store.Transition{Trait: &store.TraitChange{Host: v.Host, CreatedAt: v.VTime}}
}

// claimHosts claims as owner at now and returns the hosts claimed.
func claimHosts(t *testing.T, s *store.Store, owner string, now time.Time, hold time.Duration) []store.TraitChange {
	t.Helper()
	cs, err := s.ClaimTraitChanges(t.Context(), owner, now, hold, 100)
	must(t, "claim trait changes", err)
	return cs
}

func names(cs []store.TraitChange) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Host)
	}
	return out
}

func traitTests() map[string]func(*testing.T, Opener) {
	const hold = time.Minute
	return map[string]func(*testing.T, Opener){
		"WrittenWithTheTransition": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "a", "b", "c")
			now := testVerdict("a", verdict.Trusted, 0).VTime
			vs := []verdict.Verdict{
				withSeq(testVerdict("a", verdict.Trusted, 0), 1),
				withSeq(testVerdict("b", verdict.Untrusted, 0), 1),
			}
			_, err := s.RecordVerdicts(ctx, records(vs), withTrait)
			must(t, "record", err)
			cs := claimHosts(t, s, "r1", now, hold)
			if got := names(cs); !slices.Equal(got, []string{"a", "b"}) {
				t.Fatalf("claimed %q, want a and b (c has no verdict)", got)
			}
			a, b := cs[0], cs[1]
			if a.Level != verdict.Trusted || !a.Expiry.Equal(vs[0].Expiry) || !a.Trusted(now) || a.Trusted(vs[0].Expiry) {
				t.Errorf("a's change %+v: want its trusted verdict, trusted until %v", a, vs[0].Expiry)
			}
			if b.Level != verdict.Untrusted || b.Trusted(now) || !b.ClaimedUntil.Equal(now.Add(hold)) || !b.CreatedAt.Equal(now) {
				t.Errorf("b's change %+v: want untrusted, claimed until %v, created %v", b, now.Add(hold), now)
			}
			// The same level again is no transition: no change written.
			must(t, "applied a", s.TraitApplied(ctx, "r1", a))
			_, err = s.RecordVerdicts(ctx, records([]verdict.Verdict{withSeq(testVerdict("a", verdict.Trusted, 1), 2)}), withTrait)
			must(t, "record a again", err)
			if got := names(claimHosts(t, s, "r1", now.Add(2*hold), hold)); !slices.Equal(got, []string{"b"}) {
				t.Fatalf("after a's steady verdict claimed %q, want b only", got)
			}
			// A deleted host's change reads no verdict: the trait must go.
			_, err = s.RemoveHost(ctx, testVerdict("a", verdict.Unknown, 2), withTrait)
			must(t, "remove a", err)
			cs = claimHosts(t, s, "r1", now.Add(4*hold), hold)
			if len(cs) != 2 || cs[0].Host != "a" || cs[0].Level != verdict.Unknown || cs[0].Trusted(now) {
				t.Fatalf("after deleting a claimed %+v, want a with no verdict", cs)
			}
			if d, err := s.OutboxDepth(ctx); err != nil || d != (store.Depth{Traits: 2}) {
				t.Fatalf("depth = %+v, %v; want 2 trait changes, no webhooks", d, err)
			}
		},
		"ClaimedOnce": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			now := store.Truncate(epoch())
			var hosts []string
			for i := range 40 {
				hosts = append(hosts, fmt.Sprintf("h%02d", i))
			}
			must(t, "enqueue", s.EnqueueTraitChanges(ctx, hosts, now))
			// Replicas claiming at the same moment each get their own.
			var mu sync.Mutex
			got := map[string]int{}
			errs := race(8, func(i int) error {
				for {
					cs, err := s.ClaimTraitChanges(ctx, fmt.Sprint("r", i), now, hold, 3)
					if err != nil || len(cs) == 0 {
						return err
					}
					mu.Lock()
					for _, c := range cs {
						got[c.Host]++
					}
					mu.Unlock()
				}
			})
			for _, err := range errs {
				must(t, "claim", err)
			}
			for _, h := range hosts {
				if got[h] != 1 {
					t.Errorf("%s claimed %d times, want once", h, got[h])
				}
			}
			// Held until the claim ends, then due again (a sync that died).
			if cs := claimHosts(t, s, "r9", now.Add(hold-time.Microsecond), hold); len(cs) != 0 {
				t.Fatalf("claimed changes handed out again during the claim: %q", names(cs))
			}
			if cs := claimHosts(t, s, "r9", now.Add(hold), hold); len(cs) != len(hosts) {
				t.Fatalf("after the claim ended %d were due again, want %d", len(cs), len(hosts))
			}
		},
		"NewerChangeWhileClaimed": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			now := store.Truncate(epoch())
			must(t, "enqueue", s.EnqueueTraitChanges(ctx, []string{"a", "b"}, now))
			cs := claimHosts(t, s, "r1", now, hold)
			must(t, "newer change", s.EnqueueTraitChanges(ctx, []string{"a", "b"}, now.Add(time.Second)))
			// The claim stands: nobody else writes a's trait meanwhile.
			if got := claimHosts(t, s, "r2", now.Add(time.Second), hold); len(got) != 0 {
				t.Fatalf("r2 claimed %q while r1 held them", names(got))
			}
			// r1 applied the older state of a, and failed b: both stay,
			// due at once with the newer Gen, not removed or backed off.
			must(t, "applied a", s.TraitApplied(ctx, "r1", cs[0]))
			must(t, "failed b", s.TraitFailed(ctx, "r1", cs[1], now.Add(time.Hour), "503"))
			got := claimHosts(t, s, "r2", now.Add(time.Second), hold)
			if len(got) != 2 || got[0].Gen != cs[0].Gen+1 || got[1].Gen != cs[1].Gen+1 || got[1].Attempts != 0 {
				t.Fatalf("after the newer changes r2 claimed %+v, want a and b at the next Gen, no failed attempt", got)
			}
			// r1's claim lapsed and r2 holds them: r1's late outcome
			// changes nothing.
			must(t, "late outcome", s.TraitFailed(ctx, "r1", got[0], now.Add(time.Hour), "late"))
			must(t, "late release", s.ReleaseTraitChanges(ctx, "r1", []string{"a", "b"}))
			if again := claimHosts(t, s, "r3", now.Add(time.Second), hold); len(again) != 0 {
				t.Fatalf("r3 claimed %q although r2 holds them", names(again))
			}
			must(t, "applied", s.TraitApplied(ctx, "r2", got[0]))
			must(t, "release b", s.ReleaseTraitChanges(ctx, "r2", []string{"b"}))
			if again := claimHosts(t, s, "r3", now.Add(time.Second), hold); !slices.Equal(names(again), []string{"b"}) {
				t.Fatalf("after a applied and b released r3 claimed %q, want b", names(again))
			}
		},
		"FailedBacksOff": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			now := store.Truncate(epoch())
			must(t, "enqueue", s.EnqueueTraitChanges(ctx, []string{"a"}, now))
			cs := claimHosts(t, s, "r1", now, hold)
			must(t, "failed", s.TraitFailed(ctx, "r1", cs[0], now.Add(10*time.Second), "connection refused"))
			if got := claimHosts(t, s, "r1", now.Add(10*time.Second-time.Microsecond), hold); len(got) != 0 {
				t.Fatalf("claimed before its retry time: %+v", got)
			}
			got := claimHosts(t, s, "r2", now.Add(10*time.Second), hold)
			if len(got) != 1 || got[0].Attempts != 1 || got[0].LastError != "connection refused" || got[0].Gen != cs[0].Gen {
				t.Fatalf("retry = %+v, want a with one failed attempt", got)
			}
			must(t, "applied", s.TraitApplied(ctx, "r2", got[0]))
			if d, err := s.OutboxDepth(ctx); err != nil || d.Traits != 0 {
				t.Fatalf("depth after applying = %+v, %v", d, err)
			}
		},
		"ClaimRun": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			now := store.Truncate(epoch())
			const every = 5 * time.Minute
			won := make([]bool, 8)
			errs := race(len(won), func(i int) error {
				var err error
				won[i], err = s.ClaimRun(ctx, "reconcile", fmt.Sprint("r", i), now, every)
				return err
			})
			for _, err := range errs {
				must(t, "claim run", err)
			}
			winner := slices.Index(won, true)
			if n := len(slices.DeleteFunc(slices.Clone(won), func(b bool) bool { return !b })); n != 1 {
				t.Fatalf("%d replicas run the job, want 1", n)
			}
			if ok, err := s.ClaimRun(ctx, "reconcile", "r9", now.Add(every-time.Microsecond), every); err != nil || ok {
				t.Fatalf("claimed within the period: %v, %v", ok, err)
			}
			if ok, err := s.ClaimRun(ctx, "other", "r9", now, every); err != nil || !ok {
				t.Fatalf("another job: %v, %v; want it run", ok, err)
			}
			// Only the owner of the last run gives it back.
			must(t, "release by another", s.ReleaseRun(ctx, "reconcile", "r9"))
			if ok, _ := s.ClaimRun(ctx, "reconcile", "r9", now.Add(time.Second), every); ok {
				t.Fatal("a release by a replica that did not run it made the job due")
			}
			must(t, "release", s.ReleaseRun(ctx, "reconcile", fmt.Sprint("r", winner)))
			if ok, err := s.ClaimRun(ctx, "reconcile", "r9", now.Add(time.Second), every); err != nil || !ok {
				t.Fatalf("after the release: %v, %v; want it due", ok, err)
			}
			if ok, err := s.ClaimRun(ctx, "reconcile", "r1", now.Add(time.Second+every), every); err != nil || !ok {
				t.Fatalf("after the period: %v, %v; want it due", ok, err)
			}
		},
	}
}
