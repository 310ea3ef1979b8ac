package knowngood_test

import (
	"bytes"
	"context"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/knowngood"
	"trustpool/internal/policy"
	"trustpool/internal/store"
)

// installer stands in for the integrity service: it keeps the set it is
// given and moves no host.
type installer struct {
	mu sync.Mutex // guards kg
	kg *knowngood.Set
}

func (i *installer) SetKnownGood(_ context.Context, kg *knowngood.Set) ([]knowngood.Change, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.kg = kg
	return nil, nil
}

func (i *installer) Preview(context.Context, *knowngood.Set) ([]knowngood.Change, error) {
	return nil, nil
}

func (i *installer) KnownGood() *knowngood.Set {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.kg
}

// failingStore is the real store whose ApplyKnownGood fails at the second
// item, inside the transaction, after the first was written: the audit
// entry of the second item lacks its action, which the store refuses.
type failingStore struct {
	*store.Store
	fail bool
}

func (f *failingStore) ApplyKnownGood(ctx context.Context, items []store.KnownGoodItem) error {
	if f.fail && len(items) > 1 {
		items = slices.Clone(items)
		items[1].Audit.Action = ""
	}
	return f.Store.ApplyKnownGood(ctx, items)
}

func openStore(t *testing.T, path string) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ref(name string, class policy.Class, pcr int, b byte) *policy.Reference {
	return &policy.Reference{Name: name, Class: class, Expect: []policy.Expectation{
		{PCR: pcr, Bank: evidence.SHA256, Digests: []policy.Hex{bytes.Repeat([]byte{b}, 32)}}}}
}

func approve(name string, refs ...*policy.Reference) *policy.Policy {
	return policy.Approve(nil, name, refs)
}

// names is what a set holds, as name@version.
func names(kg *knowngood.Set) []string {
	var out []string
	for _, r := range kg.Refs {
		out = append(out, "ref "+r.Name+"@"+string(rune('0'+r.Version)))
	}
	for _, p := range kg.Policies {
		out = append(out, "policy "+p.Name+"@"+string(rune('0'+p.Version)))
	}
	slices.Sort(out)
	return out
}

// A change document is applied in one transaction: one that fails part-way
// leaves nothing of itself in force, in the store or in the audit, also
// after a restart.
func TestApplyFailingPartWayLeavesNothing(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "trustpool.db")
	st := &failingStore{Store: openStore(t, path)}
	inst := &installer{}
	now := func() time.Time { return time.Date(2026, 11, 3, 14, 0, 0, 0, time.UTC) }
	db := knowngood.New(knowngood.Config{Store: st, Installer: inst, Now: now})
	if err := db.Load(ctx); err != nil {
		t.Fatal(err)
	}

	bios := ref("fw-1", policy.BIOS, 0, 1)
	first := &policy.Change{References: []*policy.Reference{bios}, Policies: []*policy.Policy{approve("default", bios)}}
	if _, err := db.Apply(ctx, "admin", first); err != nil {
		t.Fatal(err)
	}
	want := []string{"policy default@1", "ref fw-1@1"}
	if got := names(db.Current()); !reflect.DeepEqual(got, want) {
		t.Fatalf("after the first change: %v, want %v", got, want)
	}

	// Approve a hypervisor and a new firmware, and retire the old: the
	// store fails at the second item.
	vmm, bios2 := ref("kvm-1", policy.VMM, 18, 2), ref("fw-2", policy.BIOS, 0, 3)
	second := &policy.Change{References: []*policy.Reference{vmm, bios2}, Retire: []string{"fw-1"},
		Policies: []*policy.Policy{approve("default", vmm, bios2)}}
	st.fail = true
	if _, err := db.Apply(ctx, "admin", second); err == nil {
		t.Fatal("the failing change applied")
	}
	if got := names(db.Current()); !reflect.DeepEqual(got, want) {
		t.Fatalf("in force after the failed change: %v, want %v", got, want)
	}
	audit, err := st.ListAudit(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(audit) != 2 {
		t.Fatalf("%d audit entries after the failed change, want the first change's 2", len(audit))
	}

	// After a restart the store holds exactly the first change.
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	reopened := openStore(t, path)
	defer reopened.Close()
	kg, err := knowngood.Read(ctx, reopened)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(kg); !reflect.DeepEqual(got, want) {
		t.Fatalf("after a restart: %v, want %v", got, want)
	}
	refs, err := reopened.ListReferences(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 1 || refs[0].Name != "fw-1" || refs[0].Version != 1 || refs[0].Retired {
		t.Fatalf("stored references after a restart: %+v", refs)
	}

	// The same change, not failing, applies whole.
	db = knowngood.New(knowngood.Config{Store: reopened, Installer: inst, Now: now})
	if err := db.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Apply(ctx, "admin", second); err != nil {
		t.Fatal(err)
	}
	if got, want := names(db.Current()), []string{"policy default@2", "ref fw-2@1", "ref kvm-1@1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after the change: %v, want %v", got, want)
	}
	if vmm.Version != 1 || second.Policies[0].Version != 2 {
		t.Fatalf("Apply set versions %d and %d, want 1 and 2", vmm.Version, second.Policies[0].Version)
	}
}

func TestSetWith(t *testing.T) {
	a, b := ref("a", policy.BIOS, 0, 1), ref("b", policy.VMM, 18, 2)
	var empty *knowngood.Set
	if empty.InForce("a") || empty.PolicyFor("", nil) != nil || empty.References() != nil {
		t.Fatal("a nil set holds something")
	}
	one := empty.With(&policy.Change{References: []*policy.Reference{a}, Policies: []*policy.Policy{approve("default", a)}})
	two := one.With(&policy.Change{References: []*policy.Reference{b}, Retire: []string{"a"}})
	if !one.InForce("a") || one.InForce("b") {
		t.Fatalf("one: %v", names(one))
	}
	if two.InForce("a") || !two.InForce("b") || two.PolicyFor("", nil) == nil {
		t.Fatalf("two: %v", names(two))
	}
	if !one.InForce("a") {
		t.Fatal("With modified the set it was called on")
	}
}
