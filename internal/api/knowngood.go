package api

import (
	"net/http"
	"slices"
	"strings"

	"trustpool/internal/httpjson"
	"trustpool/internal/knowngood"
	"trustpool/internal/policy"
	"trustpool/internal/problem"
	"trustpool/internal/store"
)

// maxChange bounds a known-good change document (golden references carry
// their event lists).
const maxChange = 4 << 20

// ChangeResult answers a preview or an apply: the hosts whose level the
// change moves (would move, for a preview).
type ChangeResult struct {
	Changes    []knowngood.Change  `json:"changes"`
	References []*policy.Reference `json:"references,omitempty"`
	Policies   []*policy.Policy    `json:"policies,omitempty"`
}

func (a *API) current() *knowngood.Set {
	if kg := a.cfg.KnownGood.Current(); kg != nil {
		return kg
	}
	return &knowngood.Set{}
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

func nonNil(c []knowngood.Change) []knowngood.Change {
	if c == nil {
		return []knowngood.Change{}
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
	c, err := a.cfg.KnownGood.Golden(r.Context(), req.Host, req.Name, req.Policy, req.Meta)
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
		Mode   *store.HostMode    `json:"mode,omitempty"` // pull or push: how the agent is reached
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
	if req.Mode != nil {
		if !req.Mode.Valid() {
			a.fail(w, r, problem.New(problem.Invalid, "mode %q: want pull or push", *req.Mode))
			return
		}
		if *req.Mode == store.ModePull && h.URL == "" {
			a.fail(w, r, problem.New(problem.Conflict, "host %s enrolled without a URL to dial: its agent must enroll again in pull mode", h.Name))
			return
		}
		h.Mode = *req.Mode
	}
	if err := a.cfg.Store.SetHostPolicy(r.Context(), h.Name, h.Policy, h.Labels, a.cfg.Now()); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Mode != nil {
		if err := a.cfg.Store.SetHostMode(r.Context(), h.Name, h.Mode, a.cfg.Now()); err != nil {
			a.fail(w, r, err)
			return
		}
		a.cfg.Integrity.SetMode(h.Name, h.Mode)
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
