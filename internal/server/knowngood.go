package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"trustpool/internal/integrity"
	"trustpool/internal/policy"
	"trustpool/internal/problem"
	"trustpool/internal/store"
)

// defaultPolicy is the policy hosts are held to unless labelled otherwise.
const defaultPolicy = "default"

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

// load reads the latest policy and references and installs them.
func (k *knownGood) load(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.install(ctx)
}

func (k *knownGood) install(ctx context.Context) error {
	kg := &integrity.KnownGood{Refs: map[string]*policy.Reference{}}
	refs, err := k.store.ListReferences(ctx)
	if err != nil {
		return fmt.Errorf("load references: %w", err)
	}
	for _, sr := range refs {
		if sr.Retired {
			continue
		}
		var r policy.Reference
		if err := json.Unmarshal(sr.Body, &r); err != nil {
			return fmt.Errorf("load reference %s: %w", sr.Name, err)
		}
		r.Name, r.Version = sr.Name, sr.Version
		kg.Refs[r.Name] = &r
	}
	sp, err := k.store.GetPolicy(ctx, defaultPolicy, 0)
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("load policy: %w", err)
	default:
		var p policy.Policy
		if err := json.Unmarshal(sp.Body, &p); err != nil {
			return fmt.Errorf("load policy: %w", err)
		}
		p.Name, p.Version = sp.Name, sp.Version
		kg.Policy = &p
	}
	return k.integrity.SetKnownGood(ctx, kg)
}

func (k *knownGood) PutReference(ctx context.Context, actor string, r *policy.Reference) (*policy.Reference, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	sr, err := k.store.PutReference(ctx, store.Reference{Name: r.Name, Class: string(r.Class), Body: body, CreatedBy: actor})
	if err != nil {
		return nil, fmt.Errorf("store reference %s: %w", r.Name, err)
	}
	if err := k.audit(ctx, actor, "reference.put", fmt.Sprintf("%s@v%d", sr.Name, sr.Version), body); err != nil {
		return nil, err
	}
	saved := *r
	saved.Version = sr.Version
	return &saved, k.install(ctx)
}

func (k *knownGood) PutPolicy(ctx context.Context, actor string, p *policy.Policy) (*policy.Policy, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p.Name != defaultPolicy {
		return nil, problem.New(problem.Invalid, "policy %q: only the %q policy is in force in this version", p.Name, defaultPolicy)
	}
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	sp, err := k.store.PutPolicy(ctx, store.Policy{Name: p.Name, Body: body, CreatedBy: actor})
	if err != nil {
		return nil, fmt.Errorf("store policy %s: %w", p.Name, err)
	}
	if err := k.audit(ctx, actor, "policy.put", fmt.Sprintf("%s@v%d", sp.Name, sp.Version), body); err != nil {
		return nil, err
	}
	saved := *p
	saved.Version = sp.Version
	return &saved, k.install(ctx)
}

func (k *knownGood) audit(ctx context.Context, actor, action, subject string, detail []byte) error {
	if err := k.store.Append(ctx, store.Entry{Time: k.now(), Actor: actor, Action: action, Subject: subject, Detail: detail}); err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return nil
}
