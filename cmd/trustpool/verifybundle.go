package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"trustpool/internal/evidence"
	"trustpool/internal/policy"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
)

type bundleOptions struct {
	bundle, policy, policyName string
	json                       bool
}

// verifyCmd is `trustpool verify --bundle FILE`: the server's stateless
// evidence checks, offline.
func verifyCmd(out *output) *cobra.Command {
	var o bundleOptions
	cmd := &cobra.Command{
		Use:   "verify --bundle FILE [--policy FILE] [--json]",
		Short: "Verify an evidence bundle offline, as the server does (no server, no TPM)",
		Long: `verify checks an evidence bundle (JSON: ak_public, nonce, required,
evidence) the way the attestation server checks an agent's answer: AK
signature, quote type, signer, nonce, signed PCR selection, PCR digest and
event-log replay. It prints which checks passed and the reasons for those that
did not, and the PCRs and banks the event logs could not prove.

With --policy FILE (a known-good change document: {"references":[...],
"policies":[...]}) it also evaluates the verified measurements against the
policy (the only one in the file, or the one --policy-name names), and the
quote must cover every PCR that policy reads.

The bundle's AK and nonce are taken as given: verify proves the evidence
consistent with them, not that they are the host's.

Exit status: 0 when the evidence verifies (and the policy, if given, trusts
it), 1 when it does not, 2 when the bundle or policy cannot be read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.json = out.JSON()
			return exitWith(runVerifyBundle(o, cmd.OutOrStdout(), cmd.ErrOrStderr()))
		},
	}
	cmd.Flags().StringVar(&o.bundle, "bundle", "", "evidence bundle file (required)")
	cmd.Flags().StringVar(&o.policy, "policy", "", "known-good change document with the policy and references to evaluate against")
	cmd.Flags().StringVar(&o.policyName, "policy-name", "", "which policy of --policy to use, when it holds several")
	_ = cmd.MarkFlagRequired("bundle")
	return cmd
}

// The verification checks, in the order verify.AK.Verify makes them, with
// the reason codes each can fail with. terminal checks end verification.
var bundleChecks = []struct {
	name     string
	codes    []string
	terminal bool
}{
	{"evidence shape", []string{verdict.CodeMalformed}, true},
	{"quote type", []string{verdict.CodeQuoteType}, true},
	{"signature", []string{verdict.CodeSignature}, true},
	{"signer", []string{verdict.CodeSigner}, true},
	{"nonce", []string{verdict.CodeNonce}, true},
	{"pcr selection", []string{verdict.CodeSelection}, false},
	{"pcr digest", []string{verdict.CodePCRDigest}, true},
	{"event log", []string{verdict.CodeEventLog, verdict.CodeReplay}, false},
}

// checkStatus is one check in the report.
type checkStatus struct {
	Check  string `json:"check"`
	Status string `json:"status"` // passed, failed, not run, no log
}

// policyReport is the policy evaluation in the report.
type policyReport struct {
	Name    string                  `json:"name"`
	Level   verdict.Level           `json:"level"`
	Reasons []verdict.Reason        `json:"reasons"`
	Matched map[policy.Class]string `json:"matched,omitempty"`
}

// bundleReport is what `verify --bundle --json` prints.
type bundleReport struct {
	Host     string              `json:"host,omitempty"`
	Verified bool                `json:"verified"`
	Checks   []checkStatus       `json:"checks"`
	Reasons  []verdict.Reason    `json:"reasons"`
	Unproven []verdict.Reason    `json:"unproven,omitempty"`
	Quote    *verify.QuoteInfo   `json:"quote,omitempty"`
	Events   int                 `json:"events"`
	Policy   *policyReport       `json:"policy,omitempty"`
	PCRs     map[string][]string `json:"pcrs,omitempty"` // bank: proven PCR indices
}

// runVerifyBundle is `verify --bundle`; it returns the exit code.
func runVerifyBundle(o bundleOptions, stdout, stderr io.Writer) int {
	bad := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "trustpool verify: "+format+"\n", args...)
		return exitBadInput
	}
	f, err := os.Open(o.bundle)
	if err != nil {
		return bad("%v", err)
	}
	b, err := evidence.DecodeBundle(f)
	f.Close()
	if err != nil {
		return bad("%s: %v", o.bundle, err)
	}
	ak, err := verify.ParseAK(b.AKPublic)
	if err != nil {
		return bad("%s: ak_public: %v", o.bundle, err)
	}
	var (
		pol  *policy.Policy
		refs map[string]*policy.Reference
	)
	if o.policy != "" {
		if pol, refs, err = loadPolicy(o.policy, o.policyName); err != nil {
			return bad("%s: %v", o.policy, err)
		}
	}

	required := b.Required
	if pol != nil {
		required = append(slices.Clone(required), policy.Selection(pol, refs)...)
	}
	res := ak.Verify(verify.Input{Nonce: b.Nonce, Required: required, Evidence: b.Evidence})
	rep := bundleReport{Host: b.Host, Verified: res.OK(), Reasons: res.Reasons, Unproven: res.Measurements.Unproven,
		Events: len(res.Measurements.Events) + len(res.Measurements.DRTMEvents)}
	if rep.Reasons == nil {
		rep.Reasons = []verdict.Reason{}
	}
	if res.Quote.Selection != nil {
		rep.Quote = &res.Quote
	}
	ended := false
	for _, c := range bundleChecks {
		st := "passed"
		switch {
		case ended:
			st = "not run"
		case slices.ContainsFunc(res.Reasons, func(r verdict.Reason) bool { return slices.Contains(c.codes, r.Code) }):
			st = "failed"
			ended = c.terminal
		case c.name == "event log" && len(b.Evidence.EventLog) == 0 && len(b.Evidence.DRTMLog) == 0:
			st = "no log"
		}
		rep.Checks = append(rep.Checks, checkStatus{Check: c.name, Status: st})
	}
	if len(res.Measurements.PCRs) > 0 {
		rep.PCRs = map[string][]string{}
		for bank, m := range res.Measurements.PCRs {
			for _, p := range slices.Sorted(maps.Keys(m)) {
				rep.PCRs[string(bank)] = append(rep.PCRs[string(bank)], fmt.Sprint(p))
			}
		}
	}
	code := exitOK
	if !res.OK() {
		code = exitMismatch
	}
	if pol != nil && res.OK() {
		pr := policy.Evaluate(pol, refs, &res.Measurements)
		rep.Policy = &policyReport{Name: policy.Label(pol, nil), Level: pr.Level, Reasons: pr.Reasons, Matched: pr.Matched}
		if rep.Policy.Reasons == nil {
			rep.Policy.Reasons = []verdict.Reason{}
		}
		if pr.Level != verdict.Trusted {
			code = exitMismatch
		}
	}

	if o.json {
		if err := printJSON(stdout, rep); err != nil {
			return bad("%v", err)
		}
		return code
	}
	var out bytes.Buffer
	if rep.Host != "" {
		fmt.Fprintf(&out, "host: %s\n", rep.Host)
	}
	if rep.Verified {
		fmt.Fprintf(&out, "evidence verifies: %d events proven\n", rep.Events)
	} else {
		fmt.Fprintln(&out, "evidence does NOT verify")
	}
	for _, c := range rep.Checks {
		fmt.Fprintf(&out, "  %-14s %s\n", c.Check, c.Status)
	}
	for _, r := range rep.Reasons {
		fmt.Fprintf(&out, "  reason: %s\n", r)
	}
	for _, r := range rep.Unproven {
		fmt.Fprintf(&out, "  note: %s\n", r.Message)
	}
	if rep.Policy != nil {
		fmt.Fprintf(&out, "policy %s: %s\n", rep.Policy.Name, rep.Policy.Level)
		for _, r := range rep.Policy.Reasons {
			// A reason about a PCR and bank the log could not prove says
			// so itself (policy.Evaluate, code eventlog-unproven).
			fmt.Fprintf(&out, "  reason: %s\n", r)
		}
	}
	_, _ = stdout.Write(out.Bytes())
	return code
}

// loadPolicy reads a known-good change document and picks its policy.
func loadPolicy(path, name string) (*policy.Policy, map[string]*policy.Reference, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	var c policy.Change
	if err := d.Decode(&c); err != nil {
		return nil, nil, fmt.Errorf("decode policy document: %w", err)
	}
	refs := map[string]*policy.Reference{}
	var errs []error
	for _, r := range c.References {
		if err := r.Validate(); err != nil {
			errs = append(errs, err)
		}
		refs[r.Name] = r
	}
	var pol *policy.Policy
	for _, p := range c.Policies {
		if err := p.Validate(); err != nil {
			errs = append(errs, err)
		}
		if p.Name == name || name == "" && len(c.Policies) == 1 {
			pol = p
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	if pol == nil {
		if name == "" {
			return nil, nil, fmt.Errorf("%d policies in the document: name one with --policy-name", len(c.Policies))
		}
		return nil, nil, fmt.Errorf("no policy %q in the document", name)
	}
	return pol, refs, nil
}
