// Package knowngood is the known-good database's one home: the set in
// force (Set), loading it from the store, previewing and applying a change
// document (one transaction), golden-host import, and the translation of
// references and policies to and from their stored form. What a change does
// to hosts is computed by the integrity service, which re-evaluates stored
// evidence against the set it is given (Installer); package api serves this
// over HTTP.
package knowngood

import (
	"maps"

	"trustpool/internal/policy"
	"trustpool/internal/verdict"
)

// Set is the known-good values in force: the policies, and the references
// they may approve. A Set is never modified once installed; With makes the
// next one. A nil *Set is empty.
type Set struct {
	Policies map[string]*policy.Policy
	Refs     map[string]*policy.Reference
}

// PolicyFor is the policy of a host that names explicit (may be empty) and
// carries labels (policy.For), or nil.
func (s *Set) PolicyFor(explicit string, labels map[string]string) *policy.Policy {
	if s == nil {
		return nil
	}
	return policy.For(s.Policies, explicit, labels)
}

// References is every reference in force, by name.
func (s *Set) References() map[string]*policy.Reference {
	if s == nil {
		return nil
	}
	return s.Refs
}

// InForce says whether a reference of that name is in force.
func (s *Set) InForce(name string) bool { return s != nil && s.Refs[name] != nil }

// With returns s with c applied; s is not modified.
func (s *Set) With(c *policy.Change) *Set {
	next := &Set{Policies: map[string]*policy.Policy{}, Refs: map[string]*policy.Reference{}}
	if s != nil {
		maps.Copy(next.Policies, s.Policies)
		maps.Copy(next.Refs, s.Refs)
	}
	for _, r := range c.References {
		next.Refs[r.Name] = r
	}
	for _, p := range c.Policies {
		next.Policies[p.Name] = p
	}
	for _, n := range c.Retire {
		delete(next.Refs, n)
	}
	return next
}

// Change is a host whose level a known-good change moves.
type Change struct {
	Host    string           `json:"host"`
	From    verdict.Level    `json:"from"`
	To      verdict.Level    `json:"to"`
	Policy  string           `json:"policy,omitempty"`
	Reasons []verdict.Reason `json:"reasons,omitempty"`
}
