// Package filter implements the scheduling rule of OpenStack Nova's
// TrustedFilter (Folsom–Pike) as a pure function, so that any scheduler
// (Nova's PollHosts client, the Kubernetes extender, the native filter API)
// applies the same rule.
//
// The rule: a request that names no trust requirement places anywhere; a
// request that names one places only on hosts whose current level equals it
// exactly. Levels come from the caller's level function, which must read
// verdicts fail-closed (verdict.Verdict.At): a missing or expired verdict is
// Unknown, and Unknown never equals Trusted or Untrusted.
package filter

import (
	"fmt"

	"trustpool/internal/verdict"
)

// ExtraSpec is the flavor extra-spec key Nova's TrustedFilter read, e.g.
// `nova flavor-key m1.tiny set trust:trusted_host=trusted`.
const ExtraSpec = "trust:trusted_host"

// Rejection says why one candidate did not pass, in words a person can act on.
type Rejection struct {
	Host   string
	Reason string
}

// Filter returns the candidates that pass, in their original order, and a
// rejection for every other candidate.
//
// Without the ExtraSpec key every candidate passes and level is not called.
// Otherwise the wanted value is compared with each host's level exactly and
// case-sensitively, as Nova did ("Trusted" is not "trusted"). A level
// function that returns something other than the three levels is read as
// Unknown. A wanted value that is not one of the three levels rejects every
// candidate; that includes the empty value, which Nova treated as "no
// requirement" — trustpool fails closed instead, because a flavor that
// carries the key at all meant to restrict placement.
func Filter(specs map[string]string, candidates []string, level func(host string) verdict.Level) (pass []string, rejected []Rejection) {
	wanted, ok := specs[ExtraSpec]
	if !ok {
		return append([]string(nil), candidates...), nil
	}
	want := verdict.Level(wanted)
	if !want.Valid() {
		reason := fmt.Sprintf("flavor's %s=%q is not one of %q, %q, %q (compared case-sensitively)",
			ExtraSpec, wanted, verdict.Trusted, verdict.Untrusted, verdict.Unknown)
		rejected = make([]Rejection, len(candidates))
		for i, host := range candidates {
			rejected[i] = Rejection{Host: host, Reason: reason}
		}
		return nil, rejected
	}
	pass = make([]string, 0, len(candidates))
	for _, host := range candidates {
		got := level(host)
		if !got.Valid() {
			got = verdict.Unknown
		}
		if got == want {
			pass = append(pass, host)
			continue
		}
		rejected = append(rejected, Rejection{Host: host, Reason: reason(got, want)})
	}
	return pass, rejected
}

// reason explains a level mismatch. The texts are fixed per (got, want) pair,
// so rejecting thousands of hosts allocates no strings.
func reason(got, want verdict.Level) string {
	const (
		trusted   = "level trusted"
		untrusted = "level untrusted (latest evidence failed verification or policy)"
		unknown   = "level unknown (never attested / expired)"
	)
	switch {
	case got == verdict.Trusted && want == verdict.Untrusted:
		return trusted + ", flavor wants untrusted"
	case got == verdict.Trusted:
		return trusted + ", flavor wants unknown"
	case got == verdict.Untrusted && want == verdict.Trusted:
		return untrusted + ", flavor wants trusted"
	case got == verdict.Untrusted:
		return untrusted + ", flavor wants unknown"
	case want == verdict.Trusted:
		return unknown + ", flavor wants trusted"
	default:
		return unknown + ", flavor wants untrusted"
	}
}
