// Package appraisal judges a node's evidence: a pure function from the
// host's attestation key, the nonce the server issued, the known-good set
// in force, the evidence and the time to a verdict and the record of what
// verified. It verifies (package verify) and evaluates (package policy) and
// does nothing else: no I/O, no clock, no store. The integrity service
// issues and consumes nonces, schedules challenges and hands what Appraise
// returns to the recorder; re-evaluation judges stored measurements here too
// (JudgeStored), so a verdict reads the same however it was reached.
package appraisal

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/policy"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
)

// KnownGood is the known-good set an appraisal judges by (package
// knowngood's Set). A nil KnownGood, like an empty set, approves nothing.
type KnownGood interface {
	// PolicyFor is the policy of a host that names policy (may be empty)
	// and carries labels (policy.For), or nil.
	PolicyFor(policy string, labels map[string]string) *policy.Policy
	// References is every reference in force, by name.
	References() map[string]*policy.Reference
}

// Host is what an appraisal needs to know of the host: the store's
// record, trusted (the operator set it).
type Host struct {
	Name   string
	Policy string // the policy the operator named, or "" to pick by labels
	Labels map[string]string
}

// Input is one appraisal.
type Input struct {
	Host Host
	// AK is the host's attestation key, accepted at enrollment: trusted.
	AK *verify.AK
	// Nonce is the challenge's nonce, made by the server and already
	// checked unused, unexpired and issued to Host by the caller: trusted.
	Nonce []byte
	// KnownGood is the set in force when the evidence is judged.
	KnownGood KnownGood
	// Evidence is the agent's answer: attacker controlled until verified.
	Evidence *evidence.Evidence
	// Now is when the verdict is established; it stands for Validity.
	Now      time.Time
	Validity time.Duration
}

// Record is the evidence that verified and what it proved, for the store
// (it feeds re-evaluation, golden-host import and the API).
type Record struct {
	Host         string
	Evidence     []byte // the evidence, JSON
	Nonce        []byte
	Measurements []byte // verify.MarshalMeasurements
	VerifiedAt   time.Time
}

// Appraise verifies in.Evidence and judges it under the host's policy. Bad
// evidence is an untrusted verdict with reasons and no record; the record
// is non-nil only when the evidence verified. The verdict's Seq is left for
// the caller.
func Appraise(in Input) (verdict.Verdict, *Record) {
	pol := policyFor(in.KnownGood, in.Host)
	res := in.AK.Verify(verify.Input{Nonce: in.Nonce, Required: Required(in.KnownGood, pol), Evidence: in.Evidence})
	if !res.OK() {
		return Fail(in.Host.Name, verdict.Untrusted, in.Now, in.Validity, res.Reasons...), nil
	}
	// Stored as received; evidence built in process (no document) is
	// encoded.
	evJSON, err := in.Evidence.Received, error(nil)
	if evJSON == nil {
		evJSON, err = json.Marshal(in.Evidence)
	}
	if err == nil {
		var mb []byte
		if mb, err = verify.MarshalMeasurements(&res.Measurements); err == nil {
			rec := &Record{Host: in.Host.Name, Evidence: evJSON, Nonce: in.Nonce, Measurements: mb, VerifiedAt: in.Now}
			return Judge(in.Host.Name, in.KnownGood, pol, &res.Measurements, in.Now, in.Validity), rec
		}
	}
	// Evidence that decoded from JSON encodes again; this is a bug, and
	// fails closed.
	return Fail(in.Host.Name, verdict.Untrusted, in.Now, in.Validity, verdict.Reason{Code: verdict.CodeMalformed,
		Message: fmt.Sprintf("the verified evidence could not be recorded: %v", err)}), nil
}

// Judge turns verified measurements into a verdict under pol (the host's
// policy in kg, nil if none applies), established at vtime.
func Judge(host string, kg KnownGood, pol *policy.Policy, m *verify.Measurements, vtime time.Time, validity time.Duration) verdict.Verdict {
	v := verdict.Verdict{Host: host, VTime: vtime, Expiry: vtime.Add(validity)}
	if pol == nil {
		v.Level = verdict.Untrusted
		v.Reasons = []verdict.Reason{{Code: verdict.CodeNoPolicy,
			Message: "no policy applies to this host: import a golden host or add references and a policy"}}
		return v
	}
	refs := kg.References()
	r := policy.Evaluate(pol, refs, m)
	v.Level, v.Reasons = r.Level, r.Reasons
	v.Policy = policy.Label(pol, approvedRefs(pol, refs))
	return v
}

// JudgeStored judges measurements stored by an earlier appraisal (the
// Record's Measurements, verified at vtime) under h's policy in kg. It
// decodes their events only when the policy has event rules or the host
// fails on PCR values (to explain which event): most verdicts are decided by
// PCR values alone, and re-evaluating a fleet would otherwise be spent
// decoding events.
func JudgeStored(h Host, kg KnownGood, stored []byte, vtime time.Time, validity time.Duration) (verdict.Verdict, error) {
	pol := policyFor(kg, h)
	if pol == nil {
		return Judge(h.Name, kg, nil, nil, vtime, validity), nil
	}
	if !policy.NeedsEvents(pol, kg.References()) {
		pcrs, err := verify.MeasuredPCRs(stored)
		if err != nil {
			return verdict.Verdict{}, fmt.Errorf("judge stored evidence of %s: %w", h.Name, err)
		}
		if v := Judge(h.Name, kg, pol, &verify.Measurements{PCRs: pcrs}, vtime, validity); v.Level == verdict.Trusted {
			return v, nil
		}
	}
	m, err := verify.UnmarshalMeasurements(stored)
	if err != nil {
		return verdict.Verdict{}, fmt.Errorf("judge stored evidence of %s: %w", h.Name, err)
	}
	return Judge(h.Name, kg, pol, &m, vtime, validity), nil
}

// Fail is a verdict of level with reasons, established at now, that
// involved no evaluation (the evidence did not verify, the agent did not
// answer, the nonce was spent).
func Fail(host string, level verdict.Level, now time.Time, validity time.Duration, reasons ...verdict.Reason) verdict.Verdict {
	return verdict.Verdict{Host: host, Level: level, VTime: now, Expiry: now.Add(validity), Reasons: reasons}
}

// Required is what pol reads in kg: the selection a quote must cover.
func Required(kg KnownGood, pol *policy.Policy) []evidence.Selection {
	if pol == nil {
		return nil
	}
	return policy.Selection(pol, kg.References())
}

// Selection is what a challenge of h asks the agent to quote: what h's
// policy reads, plus collect (quoted besides, so that stored evidence can
// feed golden-host import and previews of future policies).
func Selection(kg KnownGood, h Host, collect ...evidence.Selection) []evidence.Selection {
	return Merge(append(Required(kg, policyFor(kg, h)), collect...))
}

func policyFor(kg KnownGood, h Host) *policy.Policy {
	if kg == nil {
		return nil
	}
	return kg.PolicyFor(h.Policy, h.Labels)
}

func approvedRefs(pol *policy.Policy, refs map[string]*policy.Reference) []*policy.Reference {
	var out []*policy.Reference
	for _, c := range pol.Require {
		for _, n := range pol.Approved[c] {
			if r := refs[n]; r != nil {
				out = append(out, r)
			}
		}
	}
	return out
}

// Merge unions PCR selections per bank, in the order of evidence.Banks.
func Merge(sels []evidence.Selection) []evidence.Selection {
	want := map[evidence.Bank][]int{}
	for _, s := range sels {
		for _, p := range s.PCRs {
			if !slices.Contains(want[s.Bank], p) {
				want[s.Bank] = append(want[s.Bank], p)
			}
		}
	}
	var out []evidence.Selection
	for _, b := range evidence.Banks {
		if p := want[b]; len(p) > 0 {
			slices.Sort(p)
			out = append(out, evidence.Selection{Bank: b, PCRs: p})
		}
	}
	return out
}
