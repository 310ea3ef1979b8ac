package storetest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"trustpool/internal/store"
)

// testHost returns a host with every field set; i varies the keys.
func testHost(name string, i int) store.Host {
	at := store.Truncate(epoch())
	return store.Host{
		Name:      name,
		State:     store.HostActive,
		EKPublic:  []byte(fmt.Sprintf("ek-public-%d", i)),
		EKCert:    []byte{0x30, 0x82, byte(i)},
		AKPublic:  []byte(fmt.Sprintf("ak-public-%d", i)),
		AKName:    []byte{0x00, 0x0b, byte(i)},
		URL:       "https://" + name + ":9443",
		Mode:      store.ModePull,
		AgentCert: []byte("-----BEGIN CERTIFICATE-----\n"),
		Labels:    map[string]string{"rack": "r1", "zone": "a"},
		Policy:    "default",
		CreatedAt: at,
		UpdatedAt: at,
	}
}

func hostTests() map[string]func(*testing.T, Opener) {
	return map[string]func(*testing.T, Opener){
		"RoundTrip": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			want := testHost("node1", 1)
			want.CreatedAt = epoch() // not truncated: the store truncates
			want.UpdatedAt = epoch().Add(time.Second)
			must(t, "put", s.PutHost(ctx, want))
			got, err := s.GetHost(ctx, "node1")
			must(t, "get", err)
			want.CreatedAt, want.UpdatedAt = store.Truncate(want.CreatedAt), store.Truncate(want.UpdatedAt)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("get = %+v\nwant %+v", got, want)
			}
			if got.CreatedAt.Location() != time.UTC {
				t.Errorf("CreatedAt location %v, want UTC", got.CreatedAt.Location())
			}
		},
		"Mode": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			h := testHost("node1", 1)
			h.Mode = ""
			must(t, "put", s.PutHost(ctx, h))
			if got, err := s.GetHost(ctx, "node1"); err != nil || got.Mode != store.ModePull {
				t.Fatalf("a host put without a mode: %q, %v; want pull", got.Mode, err)
			}
			must(t, "set mode", s.SetHostMode(ctx, "node1", store.ModePush, epoch().Add(time.Hour)))
			if got, err := s.GetHost(ctx, "node1"); err != nil || got.Mode != store.ModePush || got.Policy != h.Policy {
				t.Fatalf("after set mode push: %+v, %v", got, err)
			}
			wantErr(t, "set mode of a ghost", s.SetHostMode(ctx, "ghost", store.ModePush, epoch()), store.ErrNotFound)
			wantErr(t, "set an unknown mode", s.SetHostMode(ctx, "node1", "sideways", epoch()), store.ErrInvalid)
		},
		"EmptyOptionalFields": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			h := store.Host{Name: "bare", State: store.HostDisabled}
			must(t, "put", s.PutHost(ctx, h))
			got, err := s.GetHost(ctx, "bare")
			must(t, "get", err)
			if len(got.EKPublic)+len(got.EKCert)+len(got.AKPublic)+len(got.AKName)+len(got.AgentCert) != 0 ||
				got.Labels != nil || got.URL != "" || got.Policy != "" || !got.CreatedAt.IsZero() {
				t.Fatalf("get = %+v, want empty fields", got)
			}
			// Hosts without an EK do not collide on the EK key.
			must(t, "put second host without EK", s.PutHost(ctx, store.Host{Name: "bare2", State: store.HostDisabled}))
		},
		"UpdateKeepsCreatedAt": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			h := testHost("node1", 1)
			must(t, "put", s.PutHost(ctx, h))
			h2 := testHost("node1", 2)
			h2.State = store.HostDisabled
			h2.Labels = nil
			h2.CreatedAt = epoch().Add(time.Hour)
			h2.UpdatedAt = store.Truncate(epoch().Add(2 * time.Hour))
			must(t, "update", s.PutHost(ctx, h2))
			got, err := s.GetHost(ctx, "node1")
			must(t, "get", err)
			want := h2
			want.CreatedAt = h.CreatedAt
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("after update = %+v\nwant %+v", got, want)
			}
		},
		"Invalid": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			for name, h := range map[string]store.Host{
				"empty name":    {State: store.HostActive},
				"unknown state": {Name: "n", State: "approved"},
				"empty state":   {Name: "n"},
			} {
				t.Run(name, func(t *testing.T) {
					wantErr(t, "put", s.PutHost(ctx, h), store.ErrInvalid)
				})
			}
			if _, err := s.GetHost(ctx, "n"); err == nil {
				t.Fatal("an invalid host was stored")
			}
		},
		"NotFound": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			_, err := s.GetHost(ctx, "ghost")
			wantErr(t, "get", err, store.ErrNotFound)
			wantErr(t, "delete", s.DeleteHost(ctx, "ghost"), store.ErrNotFound)
			_, err = s.HostByEK(ctx, store.EKHash([]byte("ek")))
			wantErr(t, "by EK", err, store.ErrNotFound)
		},
		"ByEK": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			h1, h2 := testHost("node1", 1), testHost("node2", 2)
			must(t, "put 1", s.PutHost(ctx, h1))
			must(t, "put 2", s.PutHost(ctx, h2))
			for _, h := range []store.Host{h1, h2} {
				got, err := s.HostByEK(ctx, store.EKHash(h.EKPublic))
				must(t, "by EK", err)
				if got.Name != h.Name {
					t.Errorf("HostByEK(EK of %s) = %s", h.Name, got.Name)
				}
			}
			// The raw EK is not the key: only its hash is.
			_, err := s.HostByEK(ctx, h1.EKPublic)
			wantErr(t, "by raw EK", err, store.ErrNotFound)

			// An EK is bound to one host only.
			dup := testHost("node3", 1)
			wantErr(t, "put host with node1's EK", s.PutHost(ctx, dup), store.ErrConflict)
			h2.EKPublic = h1.EKPublic
			wantErr(t, "move node1's EK to node2", s.PutHost(ctx, h2), store.ErrConflict)
			// Re-putting a host with its own EK is fine; a new EK frees the old one.
			must(t, "re-put node1", s.PutHost(ctx, h1))
			h1.EKPublic = []byte("new-ek")
			must(t, "rotate node1's EK", s.PutHost(ctx, h1))
			_, err = s.HostByEK(ctx, store.EKHash([]byte("ek-public-1")))
			wantErr(t, "by old EK", err, store.ErrNotFound)
			must(t, "put node3 with the freed EK", s.PutHost(ctx, dup))
		},
		"ListAndDelete": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			hs, err := s.ListHosts(ctx)
			must(t, "list empty", err)
			if len(hs) != 0 {
				t.Fatalf("empty store lists %d hosts", len(hs))
			}
			for i, name := range []string{"c", "a", "b"} {
				must(t, "put", s.PutHost(ctx, testHost(name, i)))
			}
			must(t, "delete b", s.DeleteHost(ctx, "b"))
			hs, err = s.ListHosts(ctx)
			must(t, "list", err)
			var names []string
			for _, h := range hs {
				names = append(names, h.Name)
			}
			if !reflect.DeepEqual(names, []string{"a", "c"}) {
				t.Fatalf("ListHosts = %v, want [a c]", names)
			}
			if !reflect.DeepEqual(hs[0], testHost("a", 1)) {
				t.Errorf("listed host %+v\nwant %+v", hs[0], testHost("a", 1))
			}
			wantErr(t, "delete b again", s.DeleteHost(ctx, "b"), store.ErrNotFound)
		},
	}
}
