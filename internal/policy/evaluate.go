package policy

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
)

// DRTM PCRs hold all-ones until an Intel TXT launch resets them.
const (
	firstDRTM = 17
	lastDRTM  = 22
)

// Result is the outcome of evaluating one host's measurements.
type Result struct {
	Level   verdict.Level
	Reasons []verdict.Reason
	// Matched names, per required class, the reference that matched.
	Matched map[Class]string
}

// Evaluate decides whether verified measurements satisfy policy p. refs maps
// reference names to their current versions; references the policy approves
// that are missing or of another class match nothing. The measurements must
// come from verify: only PCRs inside the signed quote and events that replayed.
func Evaluate(p *Policy, refs map[string]*Reference, m *verify.Measurements) Result {
	res := Result{Level: verdict.Trusted, Matched: map[Class]string{}}
	h := &hostView{m: m}
	for _, class := range p.Require {
		name, reasons := evaluateClass(p, class, refs, h)
		if len(reasons) > 0 {
			res.Reasons = append(res.Reasons, reasons...)
			continue
		}
		res.Matched[class] = name
	}
	if len(res.Reasons) > 0 {
		res.Level = verdict.Untrusted
	}
	return res
}

func evaluateClass(p *Policy, class Class, refs map[string]*Reference, h *hostView) (string, []verdict.Reason) {
	var approved []*Reference
	for _, n := range p.Approved[class] {
		if r := refs[n]; r != nil && r.Class == class {
			approved = append(approved, r)
		}
	}
	if len(approved) == 0 {
		return "", []verdict.Reason{{Code: verdict.CodeNoReference, Class: string(class),
			Message: fmt.Sprintf("policy %s requires class %s but approves no reference for it", p.Name, class)}}
	}
	if class == Launch {
		if r, ok := noLaunch(h.m); !ok {
			return "", []verdict.Reason{r}
		}
	}
	var best []verdict.Reason
	for _, ref := range approved {
		miss := match(ref, approved, h)
		if len(miss) == 0 {
			return ref.Name, nil
		}
		if best == nil || len(miss) < len(best) {
			best = miss
		}
	}
	return "", best
}

// noLaunch reports a host whose DRTM PCR 17 was never reset by a dynamic
// launch: it reads all-ones in every quoted bank.
func noLaunch(m *verify.Measurements) (verdict.Reason, bool) {
	for _, bank := range slices.Backward(evidence.Banks) {
		v, ok := m.PCRs[bank][firstDRTM]
		if !ok {
			continue
		}
		if bytes.Count(v, []byte{0xff}) == len(v) {
			return verdict.PCRReason(verdict.CodeNoLaunch, firstDRTM, string(bank),
				"PCR 17 (%s) is all-ones: the host booted without an Intel TXT measured launch", bank), false
		}
		return verdict.Reason{}, true
	}
	return verdict.PCRReason(verdict.CodeNoLaunch, firstDRTM, "",
		"PCR 17 was not quoted: no proof of an Intel TXT measured launch"), false
}

// match returns the reasons ref does not match m (none: it matches). peers are
// all approved references of the class, to list every allowed value.
func match(ref *Reference, peers []*Reference, h *hostView) []verdict.Reason {
	m := h.m
	var reasons []verdict.Reason
	for _, pcr := range pcrsOf(ref) {
		e, got, ok := strongest(ref, pcr, m)
		if !ok {
			reasons = append(reasons, verdict.PCRReason(verdict.CodeSelection, pcr, "",
				"PCR %d was not quoted in a bank reference %s covers", pcr, ref.Name))
			continue
		}
		// The quote proves the PCR's value in every case; its events only
		// when the log could account for them in this bank.
		why, unproven := unprovenWhy(m, pcr, e.Bank)
		r := verdict.Reason{}
		if len(e.Digests) > 0 && !slices.ContainsFunc(e.Digests, func(d Hex) bool { return bytes.Equal(d, got) }) {
			explain := firstDiff(e, h.events(pcr))
			if unproven && explain != "" {
				explain = "; its events cannot be compared (" + why + ")"
			}
			r = verdict.PCRReason(verdict.CodePCRMismatch, pcr, string(e.Bank),
				"PCR %d (%s) is %x; the approved %s references allow %s%s",
				pcr, e.Bank, got, ref.Class, allowed(peers, pcr, e.Bank), explain)
		}
		var rs []verdict.Reason
		switch {
		case r.Code == "" && pinned(e, got):
			// The value pins the events its rules hold over (see
			// pinned): nothing more to read.
		case unproven && (len(e.Events) > 0 || e.hasBootRules()):
			// Rules over events the log cannot prove in this bank are
			// not met, and the reason is why, not the absence of each
			// event (never a fallback to a bank the reference does
			// not name).
			rs = []verdict.Reason{verdict.PCRReason(verdict.CodeUnproven, pcr, string(e.Bank),
				"%s; reference %s needs its %s events (%s)", why, ref.Name, e.Bank, ruleKinds(e))}
		default:
			if r.Code == "" && len(e.Events) > 0 {
				if missing, ok := missingEvent(e, h.events(pcr)); ok {
					r = verdict.PCRReason(verdict.CodeEventMissing, pcr, string(e.Bank),
						"PCR %d (%s): the replayed log lacks the event %s required by %s", pcr, e.Bank, describeRule(missing), ref.Name)
				}
			}
			if e.hasBootRules() {
				var ok bool
				if rs, ok = e.memo.answer(e.Bank, h.source(pcr), pcr); !ok {
					rs = bootRuleReasons(e, h.events(pcr))
				}
			}
		}
		if r.Code != "" {
			rs = append([]verdict.Reason{r}, rs...)
		}
		for _, r := range rs {
			r.Class = string(ref.Class)
			reasons = append(reasons, r)
		}
	}
	return reasons
}

// unprovenWhy reports whether verification listed pcr in bank among the
// PCRs the event log cannot prove (Measurements.Unproven), and verify's
// words for why ("PCR 4 (sha256) cannot be proven: …").
func unprovenWhy(m *verify.Measurements, pcr int, bank evidence.Bank) (string, bool) {
	for _, u := range m.Unproven {
		if u.PCR != nil && *u.PCR == pcr && u.Bank == string(bank) {
			return u.Message, true
		}
	}
	return "", false
}

// ruleKinds names the event-reading rules of e, for people.
func ruleKinds(e Expectation) string {
	var kinds []string
	if n := len(e.Events); n == 1 {
		kinds = append(kinds, "1 event rule")
	} else if n > 1 {
		kinds = append(kinds, fmt.Sprintf("%d event rules", n))
	}
	for _, k := range []struct {
		set  bool
		name string
	}{{e.SecureBoot != nil, "secure_boot"}, {e.BootApps != nil, "boot_apps"}, {e.Cmdline != nil, "cmdline"}, {e.Files != nil, "files"}} {
		if k.set {
			kinds = append(kinds, k.name+" rule")
		}
	}
	return strings.Join(kinds, ", ")
}

func pcrsOf(ref *Reference) []int {
	var pcrs []int
	for _, e := range ref.Expect {
		if !slices.Contains(pcrs, e.PCR) {
			pcrs = append(pcrs, e.PCR)
		}
	}
	slices.Sort(pcrs)
	return pcrs
}

// strongest picks the expectation of ref for pcr in the strongest bank that
// the quote covers. A weaker bank is used only when the reference itself
// offers nothing stronger that was quoted; the challenge asks for the
// strongest, so a missing bank fails verification before this.
func strongest(ref *Reference, pcr int, m *verify.Measurements) (Expectation, []byte, bool) {
	for _, bank := range slices.Backward(evidence.Banks) {
		i := slices.IndexFunc(ref.Expect, func(e Expectation) bool { return e.PCR == pcr && e.Bank == bank })
		if i < 0 {
			continue
		}
		if got, ok := m.PCRs[bank][pcr]; ok {
			return ref.Expect[i], got, true
		}
	}
	return Expectation{}, nil, false
}

func allowed(peers []*Reference, pcr int, bank evidence.Bank) string {
	var parts []string
	for _, r := range peers {
		for _, e := range r.Expect {
			if e.PCR != pcr || e.Bank != bank {
				continue
			}
			for _, d := range e.Digests {
				parts = append(parts, fmt.Sprintf("%x (%s)", []byte(d), r.Name))
			}
		}
	}
	if len(parts) == 0 {
		return "no value in this bank"
	}
	return strings.Join(parts, " or ")
}

// hostView is one evaluation's measurements, with each PCR's events
// gathered once, when a check first asks for them.
type hostView struct {
	m     *verify.Measurements
	done  [evidence.NumPCRs]bool
	byPCR [evidence.NumPCRs][]eventlog.Event
}

// events returns the replayed events of pcr (a PCR in 17-22 from the DRTM
// log), in log order; callers must not modify them.
func (h *hostView) events(pcr int) []eventlog.Event {
	if pcr < 0 || pcr >= evidence.NumPCRs {
		return nil
	}
	if !h.done[pcr] {
		h.done[pcr] = true
		h.byPCR[pcr] = eventsOf(h.m, pcr)
	}
	return h.byPCR[pcr]
}

// source is the log whose events may extend pcr.
func (h *hostView) source(pcr int) []eventlog.Event {
	if pcr >= firstDRTM && pcr <= lastDRTM {
		return h.m.DRTMEvents
	}
	return h.m.Events
}

func eventsOf(m *verify.Measurements, pcr int) []eventlog.Event {
	src := m.Events
	if pcr >= firstDRTM && pcr <= lastDRTM {
		src = m.DRTMEvents
	}
	n := 0
	for i := range src {
		if src[i].PCR == pcr {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	out := make([]eventlog.Event, 0, n)
	for i := range src {
		if src[i].PCR == pcr {
			out = append(out, src[i])
		}
	}
	return out
}

func missingEvent(e Expectation, have []eventlog.Event) (EventRule, bool) {
	if len(e.Events) == 0 {
		return EventRule{}, false
	}
	for _, rule := range e.Events {
		if !slices.ContainsFunc(have, func(ev eventlog.Event) bool { return bytes.Equal(ev.Digest(e.Bank), rule.Digest) }) {
			return rule, true
		}
	}
	return EventRule{}, false
}

// firstDiff explains a PCR mismatch by the first event of the replayed log
// that differs from the reference's recorded events, when it has them.
func firstDiff(e Expectation, have []eventlog.Event) string {
	if len(e.Log) == 0 {
		return ""
	}
	for i, rule := range e.Log {
		if i >= len(have) {
			return fmt.Sprintf("; the log ends before the expected event %s", describeRule(rule))
		}
		if got := have[i].Digest(e.Bank); !bytes.Equal(got, rule.Digest) {
			return fmt.Sprintf("; event #%d %s%s has digest %x, expected %x%s",
				have[i].Index, eventlog.TypeName(have[i].Type), quoted(Description(have[i])), got, []byte(rule.Digest), quoted(rule.Description))
		}
	}
	if len(have) > len(e.Log) {
		x := have[len(e.Log)]
		return fmt.Sprintf("; unexpected extra event #%d %s%s", x.Index, eventlog.TypeName(x.Type), quoted(Description(x)))
	}
	return ""
}

func describeRule(r EventRule) string {
	return strings.TrimSpace(fmt.Sprintf("%s %x%s", r.Type, []byte(r.Digest), quoted(r.Description)))
}

func quoted(s string) string {
	if s == "" {
		return ""
	}
	return fmt.Sprintf(" %q", s)
}

// Description is the printable part of an event's data, for people. It is
// not covered by the event's digest for every event type, so it never
// decides anything.
func Description(e eventlog.Event) string {
	const max = 80
	var b strings.Builder
	for _, c := range e.Data {
		if b.Len() >= max {
			break
		}
		if c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}

// NeedsEvents reports whether p's verdict can come out trusted only from
// measurements with their replayed events. It is false when p reads no
// events (events then only explain a mismatch), and also when every
// required class has an approved reference whose event-reading checks can
// all be decided by their PCR's value: event rules and boot_apps and files
// rules beside the approved digests and the known-good host's Log, as golden
// import writes them (see pinned). An evaluation of PCR values alone is
// trusted only where the full one is, so a caller holding stored events may
// try values first when this is false and decode events only when that
// evaluation is not trusted.
func NeedsEvents(p *Policy, refs map[string]*Reference) bool {
	reads := func(e Expectation) bool { return len(e.Events) > 0 || e.hasBootRules() }
	any := false
	for _, names := range p.Approved {
		for _, n := range names {
			if r := refs[n]; r != nil && slices.ContainsFunc(r.Expect, reads) {
				any = true
			}
		}
	}
	if !any {
		return false
	}
	for _, class := range p.Require {
		byValue := slices.ContainsFunc(p.Approved[class], func(n string) bool {
			r := refs[n]
			return r != nil && r.Class == class && !slices.ContainsFunc(r.Expect, func(e Expectation) bool {
				return reads(e) && (e.SecureBoot != nil || e.Cmdline != nil || len(e.Log) == 0 || len(e.Digests) == 0)
			})
		})
		if !byValue {
			return true
		}
	}
	return false
}

// Selection lists, per bank, the PCRs that policy p reads through the
// references it approves for its required classes: what a challenge must ask
// the quote to cover.
func Selection(p *Policy, refs map[string]*Reference) []evidence.Selection {
	want := map[evidence.Bank][]int{}
	add := func(b evidence.Bank, pcr int) {
		if !slices.Contains(want[b], pcr) {
			want[b] = append(want[b], pcr)
		}
	}
	for _, class := range p.Require {
		for _, n := range p.Approved[class] {
			r := refs[n]
			if r == nil || r.Class != class {
				continue
			}
			for _, e := range r.Expect {
				add(e.Bank, e.PCR)
				if class == Launch {
					add(e.Bank, firstDRTM)
				}
			}
		}
	}
	var sel []evidence.Selection
	for _, b := range evidence.Banks {
		if pcrs := want[b]; len(pcrs) > 0 {
			slices.Sort(pcrs)
			sel = append(sel, evidence.Selection{Bank: b, PCRs: pcrs})
		}
	}
	return sel
}
