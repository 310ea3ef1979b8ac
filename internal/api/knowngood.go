package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"trustpool/internal/httpjson"
	"trustpool/internal/integrity"
	"trustpool/internal/policy"
	"trustpool/internal/problem"
	"trustpool/internal/store"
	"trustpool/internal/verify"
)

// maxChange bounds a known-good change document (golden references carry
// their event lists).
const maxChange = 4 << 20

// ChangeResult answers a preview or an apply: the hosts whose level the
// change moves (would move, for a preview).
type ChangeResult struct {
	Changes    []integrity.Change  `json:"changes"`
	References []*policy.Reference `json:"references,omitempty"`
	Policies   []*policy.Policy    `json:"policies,omitempty"`
}

func (a *API) current() *integrity.KnownGood {
	if kg := a.cfg.KnownGood.Current(); kg != nil {
		return kg
	}
	return &integrity.KnownGood{}
}

func (a *API) listReferences(w http.ResponseWriter, r *http.Request) {
	out := sortedValues(a.current().Refs, func(r *policy.Reference) string { return r.Name })
	httpjson.JSON(w, http.StatusOK, out)
}

func (a *API) listPolicies(w http.ResponseWriter, r *http.Request) {
	out := sortedValues(a.current().Policies, func(p *policy.Policy) string { return p.Name })
	httpjson.JSON(w, http.StatusOK, out)
}

func sortedValues[T any](m map[string]*T, name func(*T) string) []*T {
	out := make([]*T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.SortFunc(out, func(x, y *T) int { return strings.Compare(name(x), name(y)) })
	return out
}

// change applies c and answers with its result.
func (a *API) change(w http.ResponseWriter, r *http.Request, c *policy.Change) {
	changes, err := a.cfg.KnownGood.Apply(r.Context(), actor(r), c)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpjson.JSON(w, http.StatusOK, ChangeResult{Changes: nonNil(changes), References: c.References, Policies: c.Policies})
}

func nonNil(c []integrity.Change) []integrity.Change {
	if c == nil {
		return []integrity.Change{}
	}
	return c
}

// named decodes a reference or policy whose name may be left to the path.
func named[T any](a *API, w http.ResponseWriter, r *http.Request, v *T, name *string) bool {
	if err := httpjson.Decode(w, r, maxChange, v); err != nil {
		a.fail(w, r, err)
		return false
	}
	if *name == "" {
		*name = r.PathValue("name")
	}
	if *name != r.PathValue("name") {
		a.fail(w, r, problem.New(problem.Invalid, "name %q differs from the path's %q", *name, r.PathValue("name")))
		return false
	}
	return true
}

func (a *API) putReference(w http.ResponseWriter, r *http.Request) {
	var ref policy.Reference
	if named(a, w, r, &ref, &ref.Name) {
		a.change(w, r, &policy.Change{References: []*policy.Reference{&ref}})
	}
}

func (a *API) retireReference(w http.ResponseWriter, r *http.Request) {
	a.change(w, r, &policy.Change{Retire: []string{r.PathValue("name")}})
}

func (a *API) putPolicy(w http.ResponseWriter, r *http.Request) {
	var p policy.Policy
	if named(a, w, r, &p, &p.Name) {
		a.change(w, r, &policy.Change{Policies: []*policy.Policy{&p}})
	}
}

func (a *API) decodeChange(w http.ResponseWriter, r *http.Request) (*policy.Change, bool) {
	var c policy.Change
	if err := httpjson.Decode(w, r, maxChange, &c); err != nil {
		a.fail(w, r, err)
		return nil, false
	}
	return &c, true
}

func (a *API) preview(w http.ResponseWriter, r *http.Request) {
	c, ok := a.decodeChange(w, r)
	if !ok {
		return
	}
	changes, err := a.cfg.KnownGood.Preview(r.Context(), c)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpjson.JSON(w, http.StatusOK, ChangeResult{Changes: nonNil(changes)})
}

func (a *API) apply(w http.ResponseWriter, r *http.Request) {
	if c, ok := a.decodeChange(w, r); ok {
		a.change(w, r, c)
	}
}

// GoldenRequest asks to turn a host's latest verified evidence into
// references approved by a policy.
type GoldenRequest struct {
	Host    string            `json:"host"`
	Name    string            `json:"name,omitempty"`    // reference name prefix (default: the host)
	Policy  string            `json:"policy,omitempty"`  // policy to approve them in (default "default")
	Meta    map[string]string `json:"meta,omitempty"`    // vendor, bios_version, hypervisor…
	Preview bool              `json:"preview,omitempty"` // only show what would change
}

// GoldenChange builds the change a golden-host import makes: references
// from the host's latest verified evidence (only evidence that verified is
// ever stored), approved beside those already in the policy.
func GoldenChange(rec store.EvidenceRecord, req *GoldenRequest, cur *integrity.KnownGood) (*policy.Change, error) {
	var m verify.Measurements
	if err := json.Unmarshal(rec.Measurements, &m); err != nil {
		return nil, fmt.Errorf("stored measurements of %s: %w", req.Host, err)
	}
	refs, err := policy.Golden(req.Name, 0, &m, req.Meta)
	if err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "%v", err)
	}
	return &policy.Change{References: refs, Policies: []*policy.Policy{policy.Approve(cur.Policies[req.Policy], req.Policy, refs)}}, nil
}

func (a *API) golden(w http.ResponseWriter, r *http.Request) {
	var req GoldenRequest
	if err := httpjson.Decode(w, r, 4<<10, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Name == "" {
		req.Name = req.Host
	}
	if req.Policy == "" {
		req.Policy = policy.DefaultName
	}
	rec, err := a.cfg.Store.LatestEvidence(r.Context(), req.Host)
	if errors.Is(err, store.ErrNotFound) {
		err = problem.New(problem.Conflict, "host %q has no verified evidence: only evidence that verified cryptographically can become known-good", req.Host)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	c, err := GoldenChange(rec, &req, a.current())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Preview {
		changes, err := a.cfg.KnownGood.Preview(r.Context(), c)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		httpjson.JSON(w, http.StatusOK, ChangeResult{Changes: nonNil(changes), References: c.References, Policies: c.Policies})
		return
	}
	a.change(w, r, c)
}

// patchHost sets a host's policy or labels; its stored evidence is
// re-evaluated at once.
func (a *API) patchHost(w http.ResponseWriter, r *http.Request) {
	h, ok := a.host(w, r)
	if !ok {
		return
	}
	var req struct {
		Policy *string            `json:"policy,omitempty"`
		Labels *map[string]string `json:"labels,omitempty"`
	}
	if err := httpjson.Decode(w, r, 16<<10, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Policy != nil {
		h.Policy = *req.Policy
	}
	if req.Labels != nil {
		if len(*req.Labels) > 64 {
			a.fail(w, r, problem.New(problem.Invalid, "at most 64 labels"))
			return
		}
		h.Labels = *req.Labels
	}
	if err := a.cfg.Store.SetHostPolicy(r.Context(), h.Name, h.Policy, h.Labels, a.cfg.Now()); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.audit(r, "host.update", h.Name, req); err != nil {
		a.fail(w, r, err)
		return
	}
	if _, err := a.cfg.Integrity.Reevaluate(r.Context()); err != nil {
		a.fail(w, r, err)
		return
	}
	httpjson.JSON(w, http.StatusOK, a.view(h))
}
