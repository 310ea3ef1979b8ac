package policy

import (
	"errors"
	"fmt"
)

// Change is a set of known-good changes previewed or applied together: new
// versions of references and policies, and references to retire.
type Change struct {
	References []*Reference `json:"references,omitempty"`
	Policies   []*Policy    `json:"policies,omitempty"`
	Retire     []string     `json:"retire,omitempty"`
}

// Validate reports every problem at once; inForce says whether a reference
// name is currently in force (only those can be retired).
func (c *Change) Validate(inForce func(name string) bool) error {
	var errs []error
	if len(c.References)+len(c.Policies)+len(c.Retire) == 0 {
		errs = append(errs, errors.New("the change is empty"))
	}
	for _, r := range c.References {
		if err := r.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range c.Policies {
		if err := p.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, n := range c.Retire {
		if !inForce(n) {
			errs = append(errs, fmt.Errorf("retire %q: no such reference in force", n))
		}
	}
	return errors.Join(errs...)
}
