package knowngood

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"trustpool/internal/policy"
	"trustpool/internal/problem"
	"trustpool/internal/store"
	"trustpool/internal/verify"
)

// Store is what the known-good database needs from storage.
type Store interface {
	ListReferences(ctx context.Context) ([]store.Reference, error)
	ListPolicies(ctx context.Context) ([]store.Policy, error)
	ApplyKnownGood(ctx context.Context, items []store.KnownGoodItem) error
	LatestEvidence(ctx context.Context, host string) (store.EvidenceRecord, error)
}

// Installer puts a set in force and says what it does to hosts (the
// integrity service, which re-evaluates every host's stored evidence).
type Installer interface {
	// SetKnownGood installs kg and returns the hosts whose level changed.
	SetKnownGood(ctx context.Context, kg *Set) ([]Change, error)
	// Preview returns the hosts whose level kg would change, without
	// installing it.
	Preview(ctx context.Context, kg *Set) ([]Change, error)
	// KnownGood is the set in force (nil before the first install).
	KnownGood() *Set
}

// Config wires a DB.
type Config struct {
	Store     Store
	Installer Installer
	Now       func() time.Time
}

// DB is the known-good database.
type DB struct {
	cfg Config
	mu  sync.Mutex // serialises changes so versions and installs stay in order
}

// New returns the database; call Load before serving.
func New(cfg Config) *DB {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &DB{cfg: cfg}
}

// Current is the set in force, never nil.
func (db *DB) Current() *Set {
	if kg := db.cfg.Installer.KnownGood(); kg != nil {
		return kg
	}
	return &Set{}
}

// Load reads the latest policies and references from the store and
// installs them.
func (db *DB) Load(ctx context.Context) error {
	db.mu.Lock()
	defer db.mu.Unlock()
	_, err := db.install(ctx)
	return err
}

func (db *DB) install(ctx context.Context) ([]Change, error) {
	kg, err := Read(ctx, db.cfg.Store)
	if err != nil {
		return nil, err
	}
	return db.cfg.Installer.SetKnownGood(ctx, kg)
}

// Read is the set the store holds: the latest version of every policy and
// of every reference not retired.
func Read(ctx context.Context, st Store) (*Set, error) {
	kg := &Set{Policies: map[string]*policy.Policy{}, Refs: map[string]*policy.Reference{}}
	refs, err := st.ListReferences(ctx)
	if err != nil {
		return nil, fmt.Errorf("load references: %w", err)
	}
	for _, sr := range refs {
		if sr.Retired {
			continue
		}
		r, err := fromStoredReference(sr)
		if err != nil {
			return nil, err
		}
		kg.Refs[r.Name] = r
	}
	pols, err := st.ListPolicies(ctx)
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	for _, sp := range pols {
		p, err := fromStoredPolicy(sp)
		if err != nil {
			return nil, err
		}
		kg.Policies[p.Name] = p
	}
	return kg, nil
}

// fromStoredReference is the reference a stored version holds; the
// store's name and version are the truth, whatever the body says.
func fromStoredReference(sr store.Reference) (*policy.Reference, error) {
	var r policy.Reference
	if err := json.Unmarshal(sr.Body, &r); err != nil {
		return nil, fmt.Errorf("load reference %s: %w", sr.Name, err)
	}
	r.Name, r.Version = sr.Name, sr.Version
	return &r, nil
}

func fromStoredPolicy(sp store.Policy) (*policy.Policy, error) {
	var p policy.Policy
	if err := json.Unmarshal(sp.Body, &p); err != nil {
		return nil, fmt.Errorf("load policy %s: %w", sp.Name, err)
	}
	p.Name, p.Version = sp.Name, sp.Version
	return &p, nil
}

// Preview returns the hosts whose level c would change.
func (db *DB) Preview(ctx context.Context, c *policy.Change) ([]Change, error) {
	cur := db.Current()
	if err := c.Validate(cur.InForce); err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "%v", err)
	}
	return db.cfg.Installer.Preview(ctx, cur.With(c))
}

// Apply persists c as actor in one transaction (each reference and policy
// a new version, each retirement a retired version, each with its audit
// entry), installs it and returns the level changes. It sets the versions
// of c's references and policies. A change that fails leaves nothing of
// itself in the store or in force.
func (db *DB) Apply(ctx context.Context, actor string, c *policy.Change) ([]Change, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	cur := db.Current()
	if err := c.Validate(cur.InForce); err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "%v", err)
	}
	items, err := toStore(c, cur, actor, db.cfg.Now())
	if err != nil {
		return nil, err
	}
	if err := db.cfg.Store.ApplyKnownGood(ctx, items); err != nil {
		return nil, fmt.Errorf("apply known-good change: %w", err)
	}
	for i, r := range c.References {
		r.Version = items[i].Reference.Version
	}
	for i, p := range c.Policies {
		p.Version = items[len(c.References)+len(c.Retire)+i].Policy.Version
	}
	return db.install(ctx)
}

// toStore translates c into the store's items: references, then
// retirements, then policies, each with its audit entry.
func toStore(c *policy.Change, cur *Set, actor string, now time.Time) ([]store.KnownGoodItem, error) {
	entry := func(action string, detail []byte) store.Entry {
		return store.Entry{Time: now, Actor: actor, Action: action, Detail: detail}
	}
	items := make([]store.KnownGoodItem, 0, len(c.References)+len(c.Retire)+len(c.Policies))
	for _, r := range c.References {
		body, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("encode reference %s: %w", r.Name, err)
		}
		items = append(items, store.KnownGoodItem{
			Reference: &store.Reference{Name: r.Name, Class: string(r.Class), Body: body, CreatedBy: actor, CreatedAt: now},
			Audit:     entry("reference.put", body)})
	}
	for _, n := range c.Retire {
		old := cur.Refs[n] // Validate checked it is in force
		body, err := json.Marshal(old)
		if err != nil {
			return nil, fmt.Errorf("encode reference %s: %w", n, err)
		}
		items = append(items, store.KnownGoodItem{
			Reference: &store.Reference{Name: n, Class: string(old.Class), Body: body, CreatedBy: actor, CreatedAt: now, Retired: true},
			Audit:     entry("reference.retire", nil)})
	}
	for _, p := range c.Policies {
		body, err := json.Marshal(p)
		if err != nil {
			return nil, fmt.Errorf("encode policy %s: %w", p.Name, err)
		}
		items = append(items, store.KnownGoodItem{
			Policy: &store.Policy{Name: p.Name, Body: body, CreatedBy: actor, CreatedAt: now},
			Audit:  entry("policy.put", body)})
	}
	return items, nil
}

// Golden builds the change a golden-host import makes: references named
// name-<class> from host's latest verified evidence (only evidence that
// verified is ever stored), approved in the policy polName beside those it
// already approves. meta (vendor, bios_version, hypervisor…) goes into the
// references.
func (db *DB) Golden(ctx context.Context, host, name, polName string, meta map[string]string) (*policy.Change, error) {
	rec, err := db.cfg.Store.LatestEvidence(ctx, host)
	if errors.Is(err, store.ErrNotFound) {
		return nil, problem.New(problem.Conflict, "host %q has no verified evidence: only evidence that verified cryptographically can become known-good", host)
	}
	if err != nil {
		return nil, err
	}
	return GoldenChange(rec, name, polName, meta, db.Current())
}

// GoldenChange is Golden's change from a stored evidence record, judged
// against cur.
func GoldenChange(rec store.EvidenceRecord, name, polName string, meta map[string]string, cur *Set) (*policy.Change, error) {
	m, err := verify.UnmarshalMeasurements(rec.Measurements)
	if err != nil {
		return nil, fmt.Errorf("stored measurements of %s: %w", rec.Host, err)
	}
	refs, err := policy.Golden(name, 0, &m, meta)
	if err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "%v", err)
	}
	var prev *policy.Policy
	if cur != nil {
		prev = cur.Policies[polName]
	}
	return &policy.Change{References: refs, Policies: []*policy.Policy{policy.Approve(prev, polName, refs)}}, nil
}
