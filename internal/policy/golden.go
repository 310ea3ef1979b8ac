package policy

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/uefi"
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
// differing event), and for PCRs 4, 7, 8 and 9 the boot-chain rules the
// proven events support (proposeBootRules).
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
			proposeBootRules(&e, eventsOf(m, pcr))
			e.newMemo()
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

// proposeBootRules adds to e the Secure Boot and boot-chain rules a golden
// host's proven events support, beside the exact PCR value e already holds
// (so the reference is as strict as before; the rules name what differs, and
// dropping the digests lets the rules alone decide):
//   - PCR 7: enabled when SecureBoot is 1; PK, KEK and db must hold only the
//     golden host's entries; dbx must hold all of the golden host's entries
//     (later dbx updates add revocations, so more is fine, fewer is not);
//   - PCR 4: the boot applications' digests, in the golden host's order;
//   - PCR 8: each kernel command line, exactly (a quoted pattern);
//   - PCR 9: the files whose description names a kernel or an initrd must be
//     loaded (the description only picks what to propose; digests decide).
//
// Only event data the event's digest covers is read; a PCR whose events
// give nothing to propose gets no rule.
func proposeBootRules(e *Expectation, events []eventlog.Event) {
	var proven []eventlog.Event
	for _, ev := range events {
		if ev.Digest(e.Bank) != nil {
			proven = append(proven, ev)
		}
	}
	c := checker{e: *e, events: proven}
	switch e.PCR {
	case 7:
		e.SecureBoot = proposeSecureBoot(&c)
	case 4:
		var seq []Known
		for _, ev := range proven {
			if ev.Type == eventlog.EvEFIBootServicesApp {
				seq = append(seq, Known{Digest: bytes.Clone(ev.Digest(e.Bank)), Note: eventName(ev)})
			}
		}
		if len(seq) > 0 {
			e.BootApps = &DigestSetRule{Sequence: seq}
		}
	case 8:
		texts, _ := c.grubTexts(uefi.GrubKernelCmdline)
		var ps []Pattern
		for _, t := range texts {
			if t.kind == uefi.GrubKernelCmdline && !slices.ContainsFunc(ps, func(p Pattern) bool { return p.Match(t.text) }) {
				if p, err := NewPattern(regexp.QuoteMeta(t.text)); err == nil {
					ps = append(ps, p)
				}
			}
		}
		if len(ps) > 0 && len(ps) <= maxPatterns {
			e.Cmdline = &CmdlineRule{Kernel: ps}
		}
	case 9:
		var req []Known
		for _, ev := range proven {
			d := ev.Digest(e.Bank)
			if ev.Type == eventlog.EvIPL && bootFile.MatchString(Description(ev)) && !containsDigest(req, d) {
				req = append(req, Known{Digest: bytes.Clone(d), Note: Description(ev)})
			}
		}
		if len(req) > 0 {
			e.Files = &DigestSetRule{Require: req}
		}
	}
}

// bootFile picks, by the golden host's event descriptions, the PCR 9 files
// that are a kernel or an initrd ("/vmlinuz-6.8…", "/initrd.img-…",
// "initramfs-….img", RHEL's "grub_linuxefi Kernel" and "… Initrd").
var bootFile = regexp.MustCompile(`(?i)vmlinuz|initrd|initramfs|kernel`)

func proposeSecureBoot(c *checker) *SecureBootRule {
	vars, _ := c.variables()
	r := &SecureBootRule{}
	for _, v := range findVars(vars, "SecureBoot", uefi.GlobalVariable) {
		r.Enabled = bytes.Equal(v.v.Data, []byte{1})
	}
	for _, nv := range []struct {
		name   string
		vendor uefi.GUID
		dst    **SignatureDBRule
	}{{"PK", uefi.GlobalVariable, &r.PK}, {"KEK", uefi.GlobalVariable, &r.KEK}, {"db", uefi.ImageSecurityDatabase, &r.DB}, {"dbx", uefi.ImageSecurityDatabase, &r.DBX}} {
		found := findVars(vars, nv.name, nv.vendor)
		if len(found) != 1 {
			continue // absent, or measured twice: nothing sensible to propose
		}
		lists, err := uefi.ParseSignatureLists(found[0].v.Data)
		if err != nil {
			continue
		}
		var ks []Known
		seen := map[[32]byte]bool{}
		for _, en := range entriesOf(lists) {
			if !seen[en.id] {
				seen[en.id] = true
				ks = append(ks, Known{Digest: bytes.Clone(en.id[:]), Note: en.desc()})
			}
		}
		if len(ks) == 0 || len(ks) > maxRuleEntries {
			continue
		}
		for i := range ks {
			if ks[i].Note == "image hash" {
				ks[i].Note = ""
			}
		}
		if nv.name == "dbx" {
			*nv.dst = &SignatureDBRule{Require: ks}
		} else {
			*nv.dst = &SignatureDBRule{Allow: ks}
		}
	}
	if !r.Enabled && r.PK == nil && r.KEK == nil && r.DB == nil && r.DBX == nil {
		return nil
	}
	return r
}
