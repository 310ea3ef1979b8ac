// Package policy is the known-good database's logic: references (named,
// versioned expected measurements of one component class) and policies (the
// rules of a trust pool). Evaluate is pure: verified measurements and the
// policy in, a level with reasons a person can act on out.
package policy

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"trustpool/internal/evidence"
)

// Class is a component class of a host's boot chain.
type Class string

// The component classes (design.md, "The known-good database").
const (
	BIOS       Class = "bios"        // firmware: PCR 0 (1-3, 7)
	Launch     Class = "launch"      // Intel TXT measured launch: PCR 17
	VMM        Class = "vmm"         // hypervisor/OS: PCR 18/19, or 4/8/9 without TXT
	HostUnique Class = "host_unique" // per-host values
)

// Classes lists the classes in evaluation order.
var Classes = []Class{BIOS, Launch, VMM, HostUnique}

// Valid reports whether c is a known class.
func (c Class) Valid() bool { return slices.Contains(Classes, c) }

// Hex is a digest that reads and writes as a hex string in JSON, as
// operators write reference values.
type Hex []byte

// MarshalJSON writes h as a hex string.
func (h Hex) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

// UnmarshalJSON reads a hex string.
func (h *Hex) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("digest must be a hex string: %w", err)
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("digest %q: %w", s, err)
	}
	*h = v
	return nil
}

func (h Hex) String() string { return hex.EncodeToString(h) }

// EventRule requires an event with this digest in the replayed log of the
// expectation's PCR. Type and Description only explain it to people.
type EventRule struct {
	Digest      Hex    `json:"digest"`
	Type        string `json:"type,omitempty"`
	Description string `json:"description,omitempty"`
}

// Expectation is what one PCR of one bank must hold: one of Digests, every
// event of Events in its replayed log, and every Secure Boot or boot-chain
// rule (SecureBoot on PCR 7, BootApps on PCR 4, Cmdline on PCR 8, Files on
// PCR 9; see bootrules.go). At least one must be set.
// Log is not a rule: it is the known-good host's event sequence for this
// PCR, kept to explain a mismatch by the first event that differs.
type Expectation struct {
	PCR        int             `json:"pcr"`
	Bank       evidence.Bank   `json:"bank"`
	Digests    []Hex           `json:"digests,omitempty"`
	Events     []EventRule     `json:"events,omitempty"`
	SecureBoot *SecureBootRule `json:"secure_boot,omitempty"`
	BootApps   *DigestSetRule  `json:"boot_apps,omitempty"`
	Cmdline    *CmdlineRule    `json:"cmdline,omitempty"`
	Files      *DigestSetRule  `json:"files,omitempty"`
	Log        []EventRule     `json:"log,omitempty"`

	memo *ruleMemo // see memo.go
}

// UnmarshalJSON reads an expectation strictly (unknown fields are refused)
// and makes its memo.
func (e *Expectation) UnmarshalJSON(b []byte) error {
	type plain Expectation
	var p plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return err
	}
	*e = Expectation(p)
	e.newMemo()
	return nil
}

// Reference is a named, versioned set of expectations for one class.
type Reference struct {
	Name    string            `json:"name"`
	Version int               `json:"version"`
	Class   Class             `json:"class"`
	Expect  []Expectation     `json:"expect"`
	Meta    map[string]string `json:"meta,omitempty"` // vendor, model, bios_version, os, hypervisor…
}

// Validate reports every problem in r at once.
func (r *Reference) Validate() error {
	var errs []error
	if !validName(r.Name) {
		errs = append(errs, fmt.Errorf("reference name %q: want 1-64 of [a-zA-Z0-9._-]", r.Name))
	}
	if !r.Class.Valid() {
		errs = append(errs, fmt.Errorf("reference %s: unknown class %q", r.Name, r.Class))
	}
	if len(r.Expect) == 0 || len(r.Expect) > evidence.NumPCRs*len(evidence.Banks) {
		errs = append(errs, fmt.Errorf("reference %s: %d expectations, want 1 to %d", r.Name, len(r.Expect), evidence.NumPCRs*len(evidence.Banks)))
	}
	for _, e := range r.Expect {
		where := fmt.Sprintf("reference %s, PCR %d (%s)", r.Name, e.PCR, e.Bank)
		switch {
		case e.Bank.Size() == 0:
			errs = append(errs, fmt.Errorf("%s: unknown bank", where))
		case e.PCR < 0 || e.PCR >= evidence.NumPCRs:
			errs = append(errs, fmt.Errorf("%s: PCR out of range", where))
		case len(e.Digests) == 0 && len(e.Events) == 0 && !e.hasBootRules():
			errs = append(errs, fmt.Errorf("%s: no digests and no event rules", where))
		}
		if e.Bank.Size() != 0 {
			errs = append(errs, validateBootRules(where, &e)...)
		}
		for _, d := range e.Digests {
			if len(d) != e.Bank.Size() {
				errs = append(errs, fmt.Errorf("%s: digest %x is %d bytes, want %d", where, []byte(d), len(d), e.Bank.Size()))
			}
		}
		for _, ev := range slices.Concat(e.Events, e.Log) {
			if len(ev.Digest) != e.Bank.Size() {
				errs = append(errs, fmt.Errorf("%s: event digest %x is %d bytes, want %d", where, []byte(ev.Digest), len(ev.Digest), e.Bank.Size()))
			}
		}
	}
	return errors.Join(errs...)
}

// Policy is the rules of a trust pool: the required classes and, for each,
// the references approved for it. Approving several references of a class
// at once lets hosts be upgraded one at a time without leaving the pool.
type Policy struct {
	Name     string             `json:"name"`
	Version  int                `json:"version"`
	Require  []Class            `json:"require"`
	Approved map[Class][]string `json:"approved"`
	// Selector holds the policy to hosts carrying all these labels (hosts
	// may also name their policy explicitly).
	Selector map[string]string `json:"selector,omitempty"`
}

// DefaultName is the policy for hosts no other policy claims.
const DefaultName = "default"

// For picks a host's policy: the one it names explicitly, else the first
// (by name) whose selector its labels match, else the default. It returns
// nil when that policy does not exist: the host cannot be trusted then.
func For(policies map[string]*Policy, explicit string, labels map[string]string) *Policy {
	if explicit != "" {
		return policies[explicit]
	}
	names := make([]string, 0, len(policies))
	for n := range policies {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if p := policies[n]; len(p.Selector) > 0 && matches(p.Selector, labels) {
			return p
		}
	}
	return policies[DefaultName]
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Validate reports every problem in p at once.
func (p *Policy) Validate() error {
	var errs []error
	if !validName(p.Name) {
		errs = append(errs, fmt.Errorf("policy name %q: want 1-64 of [a-zA-Z0-9._-]", p.Name))
	}
	if len(p.Require) == 0 {
		errs = append(errs, fmt.Errorf("policy %s: requires no class; a policy that trusts everything is refused", p.Name))
	}
	for _, c := range p.Require {
		if !c.Valid() {
			errs = append(errs, fmt.Errorf("policy %s: unknown class %q", p.Name, c))
		}
	}
	for c := range p.Approved {
		if !c.Valid() {
			errs = append(errs, fmt.Errorf("policy %s: approves references for unknown class %q", p.Name, c))
		}
	}
	return errors.Join(errs...)
}

// Label is how a verdict names what it was evaluated against: the policy's
// and each reference's version.
func Label(p *Policy, refs []*Reference) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s@v%d", p.Name, p.Version)
	for _, r := range refs {
		fmt.Fprintf(&b, " %s@v%d", r.Name, r.Version)
	}
	return b.String()
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
