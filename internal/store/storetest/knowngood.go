package storetest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"trustpool/internal/store"
)

func knownGoodTests() map[string]func(*testing.T, Opener) {
	return map[string]func(*testing.T, Opener){
		"ReferenceVersions": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			var stored []store.Reference
			for i, body := range []string{`{"pcr":18,"v":1}`, `{"pcr":18,"v":2}`, `{"pcr":18, "v":3}`} {
				r := store.Reference{
					Name: "vmm-kvm", Version: 99, Class: "vmm", Body: []byte(body),
					CreatedAt: epoch().Add(time.Duration(i) * time.Hour), CreatedBy: "admin",
					Retired: i == 2,
				}
				got, err := s.PutReference(ctx, r)
				must(t, "put reference", err)
				r.Version, r.CreatedAt = i+1, store.Truncate(r.CreatedAt)
				if !reflect.DeepEqual(got, r) {
					t.Fatalf("put returned %+v\nwant %+v", got, r)
				}
				stored = append(stored, got)
			}
			for _, want := range stored {
				got, err := s.GetReference(ctx, "vmm-kvm", want.Version)
				must(t, "get version", err)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("version %d = %+v\nwant %+v", want.Version, got, want)
				}
			}
			latest, err := s.GetReference(ctx, "vmm-kvm", 0)
			must(t, "get latest", err)
			if !reflect.DeepEqual(latest, stored[2]) {
				t.Errorf("latest = %+v\nwant %+v", latest, stored[2])
			}
			// Another name has its own versions.
			other, err := s.PutReference(ctx, store.Reference{Name: "bios-x", Class: "bios", Body: []byte(`{}`)})
			must(t, "put other", err)
			if other.Version != 1 {
				t.Errorf("first version of another name = %d, want 1", other.Version)
			}
			list, err := s.ListReferences(ctx)
			must(t, "list", err)
			if want := []store.Reference{other, stored[2]}; !reflect.DeepEqual(list, want) {
				t.Fatalf("list = %+v\nwant %+v", list, want)
			}
		},
		"ApplyKnownGood": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			entry := func(action string) store.Entry {
				return store.Entry{Time: epoch(), Actor: "admin", Action: action}
			}
			ref := func(name string, retired bool) *store.Reference {
				return &store.Reference{Name: name, Class: "vmm", Body: []byte(`{"pcr":18}`), CreatedAt: epoch(), CreatedBy: "admin", Retired: retired}
			}
			// A change that fails at its second item, inside the
			// transaction, after the first was written, leaves nothing.
			for name, bad := range map[string]store.KnownGoodItem{
				"an audit entry without action": {Reference: ref("b", false), Audit: entry("")},
				"a body that is not JSON":       {Reference: &store.Reference{Name: "b", Class: "vmm", Body: []byte(`{`)}, Audit: entry("reference.put")},
				"a policy without name":         {Policy: &store.Policy{Body: []byte(`{}`)}, Audit: entry("policy.put")},
				"neither reference nor policy":  {Audit: entry("reference.put")},
			} {
				t.Run(name, func(t *testing.T) {
					err := s.ApplyKnownGood(ctx, []store.KnownGoodItem{{Reference: ref("a", false), Audit: entry("reference.put")}, bad})
					wantErr(t, "apply", err, store.ErrInvalid)
					refs, err := s.ListReferences(ctx)
					must(t, "list references", err)
					pols, err := s.ListPolicies(ctx)
					must(t, "list policies", err)
					audit, err := s.ListAudit(ctx, 0, 10)
					must(t, "list audit", err)
					if len(refs)+len(pols)+len(audit) != 0 {
						t.Fatalf("a failed change left %d references, %d policies, %d audit entries", len(refs), len(pols), len(audit))
					}
				})
			}
			wantErr(t, "apply nothing", s.ApplyKnownGood(ctx, nil), store.ErrInvalid)

			// A change versions each name in order, the same name twice
			// included, and audits each version in the same transaction.
			items := []store.KnownGoodItem{
				{Reference: ref("a", false), Audit: entry("reference.put")},
				{Reference: ref("a", true), Audit: entry("reference.retire")},
				{Policy: &store.Policy{Name: "default", Body: []byte(`{}`), CreatedAt: epoch(), CreatedBy: "admin"}, Audit: entry("policy.put")},
			}
			must(t, "apply", s.ApplyKnownGood(ctx, items))
			if v := []int{items[0].Reference.Version, items[1].Reference.Version, items[2].Policy.Version}; !reflect.DeepEqual(v, []int{1, 2, 1}) {
				t.Fatalf("versions %v, want [1 2 1]", v)
			}
			latest, err := s.GetReference(ctx, "a", 0)
			must(t, "get latest", err)
			if !reflect.DeepEqual(latest, *items[1].Reference) {
				t.Fatalf("latest = %+v\nwant %+v", latest, *items[1].Reference)
			}
			audit, err := s.ListAudit(ctx, 0, 10)
			must(t, "list audit", err)
			var got []string
			for _, e := range audit {
				got = append(got, e.Action+" "+e.Subject)
			}
			if want := []string{"reference.put a@v1", "reference.retire a@v2", "policy.put default@v1"}; !reflect.DeepEqual(got, want) {
				t.Fatalf("audit %v, want %v", got, want)
			}
		},
		"ReferenceErrors": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			for name, r := range map[string]store.Reference{
				"no name":    {Class: "vmm", Body: []byte(`{}`)},
				"no class":   {Name: "r", Body: []byte(`{}`)},
				"no body":    {Name: "r", Class: "vmm"},
				"not JSON":   {Name: "r", Class: "vmm", Body: []byte(`{"pcr":`)},
				"JSON twice": {Name: "r", Class: "vmm", Body: []byte(`{} {}`)},
			} {
				t.Run(name, func(t *testing.T) {
					_, err := s.PutReference(ctx, r)
					wantErr(t, "put", err, store.ErrInvalid)
				})
			}
			_, err := s.GetReference(ctx, "r", 0)
			wantErr(t, "get unknown", err, store.ErrNotFound)
			_, err = s.PutReference(ctx, store.Reference{Name: "r", Class: "vmm", Body: []byte(`{}`)})
			must(t, "put", err)
			_, err = s.GetReference(ctx, "r", 2)
			wantErr(t, "get missing version", err, store.ErrNotFound)
			list, err := s.ListReferences(ctx)
			must(t, "list", err)
			if len(list) != 1 {
				t.Fatalf("list has %d references, want 1", len(list))
			}
		},
		"PolicyVersions": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			_, err := s.GetPolicy(ctx, "default", 0)
			wantErr(t, "get before any", err, store.ErrNotFound)
			var stored []store.Policy
			for i := range 3 {
				p := store.Policy{Name: "default", Body: []byte(fmt.Sprintf(`{"require":["bios"],"n":%d}`, i)),
					CreatedAt: store.Truncate(epoch()), CreatedBy: "admin"}
				got, err := s.PutPolicy(ctx, p)
				must(t, "put policy", err)
				p.Version = i + 1
				if !reflect.DeepEqual(got, p) {
					t.Fatalf("put returned %+v\nwant %+v", got, p)
				}
				stored = append(stored, got)
			}
			for _, v := range []int{1, 2, 3, 0} {
				got, err := s.GetPolicy(ctx, "default", v)
				must(t, "get", err)
				want := stored[2]
				if v > 0 {
					want = stored[v-1]
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("version %d = %+v\nwant %+v", v, got, want)
				}
			}
			_, err = s.GetPolicy(ctx, "default", 4)
			wantErr(t, "get missing version", err, store.ErrNotFound)
			gold, err := s.PutPolicy(ctx, store.Policy{Name: "gold", Body: []byte(`{}`)})
			must(t, "put gold", err)
			list, err := s.ListPolicies(ctx)
			must(t, "list", err)
			if want := []store.Policy{stored[2], gold}; !reflect.DeepEqual(list, want) {
				t.Fatalf("list = %+v\nwant %+v", list, want)
			}
			for name, p := range map[string]store.Policy{
				"no name":  {Body: []byte(`{}`)},
				"not JSON": {Name: "p", Body: []byte(`nope`)},
			} {
				t.Run(name, func(t *testing.T) {
					_, err := s.PutPolicy(ctx, p)
					wantErr(t, "put", err, store.ErrInvalid)
				})
			}
		},
		"ConcurrentVersions": func(t *testing.T, open Opener) {
			// Concurrent changes of one name each get their own version.
			s, ctx := open(t), t.Context()
			const n = 12
			versions := make([]int, n)
			errs := race(n, func(i int) error {
				r, err := s.PutReference(ctx, store.Reference{Name: "r", Class: "vmm", Body: []byte(fmt.Sprint(i))})
				versions[i] = r.Version
				return err
			})
			seen := map[int]bool{}
			for i, err := range errs {
				must(t, "put", err)
				if seen[versions[i]] || versions[i] < 1 || versions[i] > n {
					t.Fatalf("versions %v: not 1..%d each once", versions, n)
				}
				seen[versions[i]] = true
			}
			latest, err := s.GetReference(ctx, "r", 0)
			must(t, "get latest", err)
			if latest.Version != n {
				t.Fatalf("latest version %d, want %d", latest.Version, n)
			}
		},
	}
}
