package storetest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"trustpool/internal/store"
)

func leaseTests() map[string]func(*testing.T, Opener) {
	const lease = 30 * time.Second
	return map[string]func(*testing.T, Opener){
		"CensusAndRelease": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			now := epoch()
			putHosts(t, s, "a", "b", "c")
			c, err := s.Announce(ctx, "r1", now, lease)
			must(t, "announce r1", err)
			if c != (store.Census{Owners: 1, Active: 3}) {
				t.Fatalf("census %+v, want 1 replica, 3 hosts, none held", c)
			}
			_, err = s.ClaimHosts(ctx, "r1", now, lease, 2)
			must(t, "claim", err)
			c, err = s.Announce(ctx, "r2", now, lease)
			must(t, "announce r2", err)
			if c != (store.Census{Owners: 2, Active: 3, Held: 2}) {
				t.Fatalf("census %+v, want 2 replicas, 3 hosts, 2 held", c)
			}
			must(t, "release one", s.ReleaseHosts(ctx, "r1", []string{"a"}))
			if c, _ := s.LeaseCensus(ctx, now); c.Held != 1 {
				t.Fatalf("after releasing one host %d are held, want 1", c.Held)
			}
			if c, _ := s.LeaseCensus(ctx, now.Add(lease)); c.Owners != 0 || c.Held != 0 {
				t.Fatalf("after the lease time %+v, want nobody alive and nothing held", c)
			}
			must(t, "release r2", s.ReleaseLeases(ctx, "r2"))
			if c, _ := s.LeaseCensus(ctx, now); c.Owners != 1 {
				t.Fatalf("after r2 left %d replicas are alive, want 1", c.Owners)
			}
		},
		"ClaimRenewRelease": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			now := epoch()
			putHosts(t, s, "a", "b", "c")
			for name, st := range map[string]store.HostState{"x": store.HostDisabled} {
				h := testHost(name, 0)
				h.State, h.EKPublic = st, []byte("ek-of-"+name)
				must(t, "put", s.PutHost(ctx, h))
			}
			steps := []struct {
				name   string
				do     func() ([]string, error)
				result []string
			}{
				{"r1 claims two", func() ([]string, error) { return s.ClaimHosts(ctx, "r1", now, lease, 2) }, []string{"a", "b"}},
				{"r2 claims the rest", func() ([]string, error) { return s.ClaimHosts(ctx, "r2", now, lease, 10) }, []string{"c"}},
				{"nothing left", func() ([]string, error) { return s.ClaimHosts(ctx, "r1", now.Add(lease/2), lease, 10) }, nil},
				{"r1 renews", func() ([]string, error) { return s.RenewLeases(ctx, "r1", now.Add(lease/2), lease) }, []string{"a", "b"}},
				// At now+lease r2's lease on c has expired; r1's run to now+1.5 lease.
				{"r1 takes over c", func() ([]string, error) { return s.ClaimHosts(ctx, "r1", now.Add(lease), lease, 10) }, []string{"c"}},
				{"r2 lost c", func() ([]string, error) { return s.RenewLeases(ctx, "r2", now.Add(lease), lease) }, nil},
				{"r1 holds all", func() ([]string, error) { return s.RenewLeases(ctx, "r1", now.Add(lease), lease) }, []string{"a", "b", "c"}},
				{"r1 releases", func() ([]string, error) { return nil, s.ReleaseLeases(ctx, "r1") }, nil},
				{"r2 claims at once", func() ([]string, error) { return s.ClaimHosts(ctx, "r2", now.Add(lease), lease, 10) }, []string{"a", "b", "c"}},
				{"r1 holds none", func() ([]string, error) { return s.RenewLeases(ctx, "r1", now.Add(lease), lease) }, nil},
			}
			for _, st := range steps {
				got, err := st.do()
				must(t, st.name, err)
				if !reflect.DeepEqual(got, st.result) {
					t.Fatalf("%s: got %v, want %v", st.name, got, st.result)
				}
			}
		},
		"ExpiredOwnLease": func(t *testing.T, open Opener) {
			// An expired lease nobody took is still the owner's: renewing it
			// works, and claiming it again works too.
			s, ctx := open(t), t.Context()
			putHosts(t, s, "a", "b")
			_, err := s.ClaimHosts(ctx, "r1", epoch(), lease, 1)
			must(t, "claim", err)
			got, err := s.RenewLeases(ctx, "r1", epoch().Add(2*lease), lease)
			must(t, "renew expired", err)
			if !reflect.DeepEqual(got, []string{"a"}) {
				t.Fatalf("renew = %v, want [a]", got)
			}
			got, err = s.ClaimHosts(ctx, "r1", epoch().Add(4*lease), lease, 10)
			must(t, "claim again", err)
			if !reflect.DeepEqual(got, []string{"a", "b"}) {
				t.Fatalf("claim = %v, want [a b]", got)
			}
		},
		"HostStateChanges": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "a", "b")
			_, err := s.ClaimHosts(ctx, "r1", epoch(), lease, 10)
			must(t, "claim", err)
			h, err := s.GetHost(ctx, "a")
			must(t, "get", err)
			h.State = store.HostDisabled
			must(t, "disable a", s.PutHost(ctx, h))
			must(t, "delete b", s.DeleteHost(ctx, "b"))
			putHosts(t, s, "b") // enrolled again: no lease
			got, err := s.RenewLeases(ctx, "r1", epoch(), lease)
			must(t, "renew", err)
			if len(got) != 0 {
				t.Fatalf("renew = %v: a is disabled and b was deleted", got)
			}
			got, err = s.ClaimHosts(ctx, "r2", epoch(), lease, 10)
			must(t, "claim", err)
			if !reflect.DeepEqual(got, []string{"b"}) {
				t.Fatalf("claim = %v, want [b]", got)
			}
		},
		"Errors": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			_, err := s.ClaimHosts(ctx, "", epoch(), lease, 1)
			wantErr(t, "claim without owner", err, store.ErrInvalid)
			_, err = s.ClaimHosts(ctx, "r1", epoch(), 0, 1)
			wantErr(t, "claim without lease time", err, store.ErrInvalid)
			_, err = s.ClaimHosts(ctx, "r1", epoch(), lease, 0)
			wantErr(t, "claim with limit 0", err, store.ErrInvalid)
			_, err = s.RenewLeases(ctx, "r1", epoch(), -lease)
			wantErr(t, "renew with negative lease time", err, store.ErrInvalid)
		},
		"ConcurrentClaims": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			const hosts, owners = 30, 6
			names := make([]string, hosts)
			for i := range names {
				names[i] = fmt.Sprintf("node%02d", i)
			}
			putHosts(t, s, names...)
			claimed := make([][]string, owners)
			errs := race(owners, func(i int) error {
				for {
					got, err := s.ClaimHosts(ctx, fmt.Sprint("r", i), epoch(), lease, 4)
					if err != nil || len(got) == 0 {
						return err
					}
					claimed[i] = append(claimed[i], got...)
				}
			})
			owner := map[string]int{}
			for i, err := range errs {
				must(t, "claim", err)
				for _, h := range claimed[i] {
					if o, dup := owner[h]; dup {
						t.Fatalf("%s claimed by r%d and r%d", h, o, i)
					}
					owner[h] = i
				}
			}
			if len(owner) != hosts {
				t.Fatalf("%d hosts claimed, want %d", len(owner), hosts)
			}
			for i := range owners {
				held, err := s.RenewLeases(ctx, fmt.Sprint("r", i), epoch(), lease)
				must(t, "renew", err)
				if !reflect.DeepEqual(held, sorted(claimed[i])) {
					t.Fatalf("r%d holds %v, claimed %v", i, held, claimed[i])
				}
			}
		},
	}
}
