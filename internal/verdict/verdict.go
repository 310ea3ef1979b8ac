// Package verdict defines a host's trust level and the reasons behind it. It is
// the vocabulary shared by the verifier, the policy engine, the store and every
// relying party. Levels fail closed: a verdict that is missing or past its
// expiry reads as Unknown, and Unknown never satisfies a request for Trusted.
package verdict

import (
	"fmt"
	"time"
)

// Level is a host's trust level.
type Level string

// The three trust levels. The strings are those of the OpenAttestation
// PollHosts contract and must not change.
const (
	Trusted   Level = "trusted"
	Untrusted Level = "untrusted"
	Unknown   Level = "unknown"
)

// Valid reports whether l is one of the three levels.
func (l Level) Valid() bool { return l == Trusted || l == Untrusted || l == Unknown }

// Reason codes. They are machine-readable and stable; Reason.Message says the
// same for a person. This is the one list: every code a verdict may carry,
// from verification or from policy, is declared here.
const (
	// Verification of the quote itself.
	CodeMalformed      = "evidence-malformed"  // evidence could not be decoded
	CodeSignature      = "quote-signature"     // signature does not verify under the host's AK
	CodeSigner         = "quote-signer"        // quote names another signing key
	CodeQuoteType      = "quote-type"          // not a TPM-generated quote (magic/type)
	CodeNonce          = "nonce-mismatch"      // quote's nonce is not the challenge's
	CodeNonceReused    = "nonce-reused"        // challenge's nonce was already consumed
	CodeSelection      = "pcr-not-quoted"      // a PCR the policy reads is outside the signed selection
	CodePCRDigest      = "pcr-digest-mismatch" // reported PCR values do not hash to the signed digest
	CodeEventLog       = "eventlog-malformed"  // event log could not be parsed
	CodeReplay         = "eventlog-replay"     // event log does not replay to the quoted PCR
	CodeUnproven       = "eventlog-unproven"   // the log cannot prove a quoted PCR's events in a bank (SHA-1 format log, an event without that bank's digest)
	CodeAKNotActivated = "ak-not-activated"    // AK never passed credential activation
	CodeUnreachable    = "agent-unreachable"   // no evidence could be obtained
	CodeAgentError     = "agent-error"         // agent answered with an error
	CodeExpired        = "verdict-expired"     // last verdict is past its expiry
	CodeNotAttested    = "not-attested"        // never attested
	CodeDeleted        = "host-deleted"        // the host was removed
	// Policy evaluation.
	CodePCRMismatch  = "pcr-mismatch"          // PCR value is not an approved one
	CodeEventMissing = "event-missing"         // a required event is not in the replayed log
	CodeBootRule     = "boot-rule-mismatch"    // a Secure Boot or boot-chain rule is contradicted by the proven events
	CodeNoLaunch     = "no-measured-launch"    // PCR 17-22 all-ones: no TXT launch
	CodeNoReference  = "no-approved-reference" // a required class has no approved reference
	CodeNoPolicy     = "no-policy"             // no known-good values configured
)

// Reason explains one failed check.
type Reason struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// PCR and Bank locate the failure when it concerns one PCR.
	PCR  *int   `json:"pcr,omitempty"`
	Bank string `json:"bank,omitempty"`
	// Class is the reference class (bios, launch, vmm, host_unique) concerned.
	Class string `json:"class,omitempty"`
}

func (r Reason) String() string { return r.Code + ": " + r.Message }

// PCRReason builds a reason about one PCR.
func PCRReason(code string, pcr int, bank, format string, args ...any) Reason {
	return Reason{Code: code, PCR: &pcr, Bank: bank, Message: fmt.Sprintf(format, args...)}
}

// Verdict is the outcome of one attestation of one host.
type Verdict struct {
	Host  string `json:"host"`
	Level Level  `json:"level"`
	// VTime is when the verdict was established (the evidence was verified).
	VTime time.Time `json:"vtime"`
	// Expiry is when the verdict stops being valid; after it the level is Unknown.
	Expiry  time.Time `json:"expiry"`
	Reasons []Reason  `json:"reasons,omitempty"`
	// Policy names the known-good values (policy and version) used.
	Policy string `json:"policy,omitempty"`
	// Seq orders a host's verdicts: the number the store gave the
	// attestation the verdict judges (a re-evaluation or an expiry keeps
	// it). A verdict never replaces one of a higher Seq, whatever the
	// clocks say.
	Seq int64 `json:"seq,omitempty"`
}

// At is the level as it must be read at now: Unknown for a zero or expired
// verdict, the stored level otherwise.
func (v Verdict) At(now time.Time) Level {
	if v.VTime.IsZero() || !v.Level.Valid() || !now.Before(v.Expiry) {
		return Unknown
	}
	return v.Level
}
