package server

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"trustpool/internal/integrity"
	"trustpool/internal/policy"
	"trustpool/internal/problem"
	"trustpool/internal/store"
)

// knownGood keeps the known-good database: it persists every change as a new
// version, audits it, and installs the result in the integrity service, which
// re-evaluates stored evidence at once.
type knownGood struct {
	store     *store.Store
	integrity *integrity.Service
	now       func() time.Time

	mu sync.Mutex // serialises changes so versions and installs stay in order
}

func (k *knownGood) Current() *integrity.KnownGood { return k.integrity.KnownGood() }

// load reads the latest policies and references and installs them.
func (k *knownGood) load(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, err := k.install(ctx)
	return err
}

func (k *knownGood) install(ctx context.Context) ([]integrity.Change, error) {
	kg := &integrity.KnownGood{Policies: map[string]*policy.Policy{}, Refs: map[string]*policy.Reference{}}
	refs, err := k.store.ListReferences(ctx)
	if err != nil {
		return nil, fmt.Errorf("load references: %w", err)
	}
	for _, sr := range refs {
		if sr.Retired {
			continue
		}
		var r policy.Reference
		if err := json.Unmarshal(sr.Body, &r); err != nil {
			return nil, fmt.Errorf("load reference %s: %w", sr.Name, err)
		}
		r.Name, r.Version = sr.Name, sr.Version
		kg.Refs[r.Name] = &r
	}
	pols, err := k.store.ListPolicies(ctx)
	if err != nil {
		return nil, fmt.Errorf("load policies: %w", err)
	}
	for _, sp := range pols {
		var p policy.Policy
		if err := json.Unmarshal(sp.Body, &p); err != nil {
			return nil, fmt.Errorf("load policy %s: %w", sp.Name, err)
		}
		p.Name, p.Version = sp.Name, sp.Version
		kg.Policies[p.Name] = &p
	}
	return k.integrity.SetKnownGood(ctx, kg)
}

// Preview returns the hosts whose level c would change.
func (k *knownGood) Preview(ctx context.Context, c *policy.Change) ([]integrity.Change, error) {
	cur := k.Current()
	if err := c.Validate(cur.InForce); err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "%v", err)
	}
	return k.integrity.Preview(ctx, cur.With(c))
}

// Apply persists c (each reference and policy a new version, each retirement
// a retired version), audits it, installs it and returns the level changes.
func (k *knownGood) Apply(ctx context.Context, actor string, c *policy.Change) ([]integrity.Change, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := c.Validate(k.Current().InForce); err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "%v", err)
	}
	// Each version and its audit entry commit together.
	entry := func(action string, detail []byte) store.Entry {
		return store.Entry{Time: k.now(), Actor: actor, Action: action, Detail: detail}
	}
	for _, r := range c.References {
		body, _ := json.Marshal(r)
		sr, err := k.store.PutReference(ctx, store.Reference{Name: r.Name, Class: string(r.Class), Body: body, CreatedBy: actor, CreatedAt: k.now()},
			entry("reference.put", body))
		if err != nil {
			return nil, fmt.Errorf("store reference %s: %w", r.Name, err)
		}
		r.Version = sr.Version
	}
	for _, n := range c.Retire {
		old := k.Current().Refs[n]
		body, _ := json.Marshal(old)
		if _, err := k.store.PutReference(ctx, store.Reference{Name: n, Class: string(old.Class), Body: body, CreatedBy: actor, CreatedAt: k.now(), Retired: true},
			entry("reference.retire", nil)); err != nil {
			return nil, fmt.Errorf("retire reference %s: %w", n, err)
		}
	}
	for _, p := range c.Policies {
		body, _ := json.Marshal(p)
		sp, err := k.store.PutPolicy(ctx, store.Policy{Name: p.Name, Body: body, CreatedBy: actor, CreatedAt: k.now()},
			entry("policy.put", body))
		if err != nil {
			return nil, fmt.Errorf("store policy %s: %w", p.Name, err)
		}
		p.Version = sp.Version
	}
	return k.install(ctx)
}
