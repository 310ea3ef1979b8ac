package policy

import (
	"bytes"
	"fmt"
	"slices"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verify"
)

// PCRs each class takes from a golden host. On a host with a measured launch
// the hypervisor is in PCR 18/19; without one, the boot chain in 4/5/8/9 is
// what identifies it.
var (
	goldenBIOS      = []int{0, 1, 2, 3, 7}
	goldenLaunch    = []int{17}
	goldenVMMTXT    = []int{18, 19}
	goldenVMMStatic = []int{4, 5, 8, 9}
)

// Golden turns a known-good host's verified measurements into references, one
// per class found, named "<name>-<class>" at the given version. Each
// expectation takes the PCR's value in the strongest quoted bank and the
// events that replayed into it as its Log (for reasons that name the
// differing event).
// Launch is included only when the host performed a measured launch.
func Golden(name string, version int, m *verify.Measurements, meta map[string]string) ([]*Reference, error) {
	bank, ok := strongestBank(m)
	if !ok {
		return nil, fmt.Errorf("golden import: the evidence has no verified PCR values")
	}
	_, launched := noLaunch(m)
	vmm := goldenVMMStatic
	if launched {
		vmm = goldenVMMTXT
	}
	plan := []struct {
		class Class
		pcrs  []int
	}{{BIOS, goldenBIOS}, {Launch, goldenLaunch}, {VMM, vmm}}
	var refs []*Reference
	for _, p := range plan {
		if p.class == Launch && !launched {
			continue
		}
		r := &Reference{Name: fmt.Sprintf("%s-%s", name, p.class), Version: version, Class: p.class, Meta: meta}
		for _, pcr := range p.pcrs {
			v, ok := m.PCRs[bank][pcr]
			if !ok || (pcr >= firstDRTM && isZero(v) && !slices.ContainsFunc(m.DRTMEvents, func(e eventlog.Event) bool { return e.PCR == pcr })) {
				continue // not quoted, or an unused DRTM PCR
			}
			e := Expectation{PCR: pcr, Bank: bank, Digests: []Hex{bytes.Clone(v)}}
			for _, ev := range eventsOf(m, pcr) {
				if d := ev.Digest(bank); d != nil {
					e.Log = append(e.Log, EventRule{Digest: bytes.Clone(d), Type: eventlog.TypeName(ev.Type), Description: Description(ev)})
				}
			}
			r.Expect = append(r.Expect, e)
		}
		if len(r.Expect) == 0 {
			continue
		}
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("golden import: %w", err)
		}
		refs = append(refs, r)
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("golden import: no class could be taken from the evidence")
	}
	return refs, nil
}

// Approve returns a copy of p (or a new policy named name when p is nil)
// that requires each reference's class and approves the references beside
// those already approved.
func Approve(p *Policy, name string, refs []*Reference) *Policy {
	out := &Policy{Name: name, Approved: map[Class][]string{}}
	if p != nil {
		out.Name, out.Version = p.Name, p.Version
		out.Require = slices.Clone(p.Require)
		for c, ns := range p.Approved {
			out.Approved[c] = slices.Clone(ns)
		}
	}
	for _, r := range refs {
		if !slices.Contains(out.Require, r.Class) {
			out.Require = append(out.Require, r.Class)
		}
		if !slices.Contains(out.Approved[r.Class], r.Name) {
			out.Approved[r.Class] = append(out.Approved[r.Class], r.Name)
		}
	}
	slices.SortFunc(out.Require, func(a, b Class) int { return slices.Index(Classes, a) - slices.Index(Classes, b) })
	return out
}

func strongestBank(m *verify.Measurements) (evidence.Bank, bool) {
	for _, b := range slices.Backward(evidence.Banks) {
		if len(m.PCRs[b]) > 0 {
			return b, true
		}
	}
	return "", false
}

func isZero(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }
