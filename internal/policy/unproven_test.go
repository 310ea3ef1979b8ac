package policy

import (
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

// TestEvaluateUnproven: a policy reason about a PCR and bank that
// verification could not prove from the event log (Measurements.Unproven)
// says so, instead of naming an event the log "lacks".
func TestEvaluateUnproven(t *testing.T) {
	const sha1Why = "PCR 4 (sha256) cannot be proven: the event log is in SHA-1 format, which carries sha1 digests only"
	const partialWhy = "PCR 12 (sha1) cannot be proven: event 51 carries no sha1 digest"
	shim := d(evidence.SHA256, "shim")
	pcr4 := d(evidence.SHA256, "pcr4")
	unproven := func(pcr int, bank evidence.Bank, msg string) verdict.Reason {
		return verdict.PCRReason(verdict.CodeUnproven, pcr, string(bank), "%s", msg)
	}
	// A SHA-1 format log: PCR 4's events are proven in sha1 only.
	sha1Log := &verify.Measurements{
		PCRs: map[evidence.Bank]map[int][]byte{
			evidence.SHA1:   {4: d(evidence.SHA1, "pcr4"), 12: d(evidence.SHA1, "pcr12")},
			evidence.SHA256: {4: pcr4, 9: d(evidence.SHA256, "pcr9"), 12: d(evidence.SHA256, "pcr12")},
		},
		Events: []eventlog.Event{{Index: 30, PCR: 4, Type: eventlog.EvEFIBootServicesApp,
			Digests: []eventlog.Digest{{Bank: evidence.SHA1, Value: d(evidence.SHA1, "shim")}}, Data: []byte("shim")}},
		Unproven: []verdict.Reason{unproven(4, evidence.SHA256, sha1Why), unproven(12, evidence.SHA1, partialWhy)},
	}
	tests := []struct {
		name    string
		expect  Expectation
		trusted bool
		code    string
		pcr     int
		want    string // the whole message, or a part of it
		exact   bool
	}{
		{name: "sha256 event rule against a SHA-1 log",
			expect: Expectation{PCR: 4, Bank: evidence.SHA256, Events: []EventRule{{Digest: shim}}},
			code:   verdict.CodeUnproven, pcr: 4, exact: true,
			want: sha1Why + "; reference r needs its sha256 events (1 event rule)"},
		{name: "boot_apps rule against a SHA-1 log",
			expect: Expectation{PCR: 4, Bank: evidence.SHA256, BootApps: &DigestSetRule{Sequence: []Known{{Digest: shim}}}},
			code:   verdict.CodeUnproven, pcr: 4, exact: true,
			want: sha1Why + "; reference r needs its sha256 events (boot_apps rule)"},
		{name: "value and rule: the value matches, the rule cannot be checked",
			expect: Expectation{PCR: 4, Bank: evidence.SHA256, Digests: []Hex{pcr4}, BootApps: &DigestSetRule{Allow: []Known{{Digest: shim}}}},
			code:   verdict.CodeUnproven, pcr: 4, want: sha1Why},
		{name: "value only: the quote proves it, the log is not needed",
			expect: Expectation{PCR: 4, Bank: evidence.SHA256, Digests: []Hex{pcr4}}, trusted: true},
		{name: "value differs: the log cannot explain it",
			expect: Expectation{PCR: 4, Bank: evidence.SHA256, Digests: []Hex{d(evidence.SHA256, "other")},
				Log: []EventRule{{Digest: shim, Type: "EV_EFI_BOOT_SERVICES_APPLICATION"}}},
			code: verdict.CodePCRMismatch, pcr: 4, want: "; its events cannot be compared (" + sha1Why + ")"},
		{name: "sha1 rule on the same PCR is proven",
			expect: Expectation{PCR: 4, Bank: evidence.SHA1, Events: []EventRule{{Digest: d(evidence.SHA1, "shim")}}}, trusted: true},
		{name: "sha1 rule on the same PCR, event absent: the log lacks it",
			expect: Expectation{PCR: 4, Bank: evidence.SHA1, Events: []EventRule{{Digest: d(evidence.SHA1, "grub")}}},
			code:   verdict.CodeEventMissing, pcr: 4, want: "the replayed log lacks the event"},
		{name: "another PCR, proven but without the event: the log lacks it",
			expect: Expectation{PCR: 9, Bank: evidence.SHA256, Files: &DigestSetRule{Require: []Known{{Digest: shim}}}},
			code:   verdict.CodeEventMissing, pcr: 9, want: "no EV_IPL event"},
		{name: "event without the bank's digest (partial-digest log)",
			expect: Expectation{PCR: 12, Bank: evidence.SHA1, Events: []EventRule{{Digest: d(evidence.SHA1, "bootmgr")}, {Digest: d(evidence.SHA1, "winload")}}},
			code:   verdict.CodeUnproven, pcr: 12, exact: true,
			want: partialWhy + "; reference r needs its sha1 events (2 event rules)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ref("r", VMM, tc.expect)
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
			p := &Policy{Name: "p", Version: 1, Require: []Class{VMM}, Approved: map[Class][]string{VMM: {"r"}}}
			res := Evaluate(p, map[string]*Reference{"r": r}, sha1Log)
			if tc.trusted {
				if res.Level != verdict.Trusted {
					t.Fatalf("level %s, reasons %v, want trusted", res.Level, res.Reasons)
				}
				return
			}
			if res.Level != verdict.Untrusted || len(res.Reasons) == 0 {
				t.Fatalf("level %s, reasons %v, want untrusted", res.Level, res.Reasons)
			}
			for _, r := range res.Reasons {
				if strings.Contains(r.Message, "lacks the event") && tc.code != verdict.CodeEventMissing {
					t.Errorf("reason %v blames a missing event", r)
				}
			}
			var got *verdict.Reason
			for i, r := range res.Reasons {
				if pcrIs(r, tc.code, tc.pcr) {
					got = &res.Reasons[i]
					break
				}
			}
			if got == nil {
				t.Fatalf("reasons %v, want %s on PCR %d", res.Reasons, tc.code, tc.pcr)
			}
			if got.Bank != string(tc.expect.Bank) || got.Class != string(VMM) {
				t.Errorf("reason %+v, want bank %s, class vmm", *got, tc.expect.Bank)
			}
			if tc.exact && got.Message != tc.want || !strings.Contains(got.Message, tc.want) {
				t.Errorf("message\n  %q\nwant\n  %q", got.Message, tc.want)
			}
			if tc.code == verdict.CodeUnproven && len(res.Reasons) != 1 {
				t.Errorf("reasons %v, want the unproven one alone", res.Reasons)
			}
		})
	}
}

// verifiedNode verifies a fresh quote of n over sel, as the server does.
func verifiedNode(t *testing.T, n *verifytest.Node, sel []evidence.Selection) *verify.Measurements {
	t.Helper()
	n.Selection = sel
	nonce := make([]byte, 32)
	rand.Read(nonce)
	ev, err := n.Evidence(nonce)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := verify.ParseAK(n.AK.Public())
	if err != nil {
		t.Fatal(err)
	}
	res := ak.Verify(verify.Input{Nonce: nonce, Required: sel, Evidence: ev})
	if !res.OK() {
		t.Fatalf("Verify: %v", res.Reasons)
	}
	return &res.Measurements
}

// TestEvaluateUnprovenThroughVerify runs real verification of a SHA-1
// format log and of a Windows log with sha256-only events, then policies
// whose rules need the bank the log cannot prove: the reason is verify's
// account of why, and the bank the log does prove still decides as usual.
func TestEvaluateUnprovenThroughVerify(t *testing.T) {
	image := func(b evidence.Bank, name string) Hex { return verifytestDigest(b, "image:"+name) }
	n, err := verifytest.NewNode(verifytest.P256, "old-fw.example")
	if err != nil {
		t.Fatal(err)
	}
	pcrs := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	tests := []struct {
		name    string
		log     []byte
		sel     []evidence.Selection
		expect  func(m *verify.Measurements) []Expectation
		trusted bool
		want    []string // every reason's message, in order
	}{
		{name: "SHA-1 log, sha256 boot-chain rules",
			log: verifytest.SHA1BootLog("old-fw.example").Bytes(),
			sel: []evidence.Selection{{Bank: evidence.SHA1, PCRs: pcrs}, {Bank: evidence.SHA256, PCRs: pcrs}},
			expect: func(m *verify.Measurements) []Expectation {
				return []Expectation{
					{PCR: 4, Bank: evidence.SHA256, Digests: []Hex{m.PCRs[evidence.SHA256][4]},
						BootApps: &DigestSetRule{Require: []Known{{Digest: image(evidence.SHA256, "shimx64.efi")}}}},
					{PCR: 9, Bank: evidence.SHA256, Files: &DigestSetRule{Require: []Known{{Digest: image(evidence.SHA256, "/boot/vmlinuz-6.1.0-28-amd64")}}}},
				}
			},
			want: []string{
				"PCR 4 (sha256) cannot be proven: the event log is in SHA-1 format, which carries sha1 digests only; reference vmm needs its sha256 events (boot_apps rule)",
				"PCR 9 (sha256) cannot be proven: the event log is in SHA-1 format, which carries sha1 digests only; reference vmm needs its sha256 events (files rule)",
			}},
		{name: "SHA-1 log, the same rules in sha1",
			log: verifytest.SHA1BootLog("old-fw.example").Bytes(),
			sel: []evidence.Selection{{Bank: evidence.SHA1, PCRs: pcrs}},
			expect: func(m *verify.Measurements) []Expectation {
				return []Expectation{
					{PCR: 4, Bank: evidence.SHA1, BootApps: &DigestSetRule{Require: []Known{{Digest: image(evidence.SHA1, "shimx64.efi")}}}},
					{PCR: 9, Bank: evidence.SHA1, Files: &DigestSetRule{Require: []Known{{Digest: image(evidence.SHA1, "/boot/vmlinuz-6.1.0-28-amd64")}}}},
				}
			},
			trusted: true},
		{name: "Windows log, a sha1 event rule on a PCR with sha256-only events",
			log: verifytest.WindowsBootLog("win1.example").Bytes(),
			sel: []evidence.Selection{{Bank: evidence.SHA1, PCRs: []int{4, 12}}, {Bank: evidence.SHA256, PCRs: []int{4, 12}}},
			expect: func(m *verify.Measurements) []Expectation {
				return []Expectation{
					{PCR: 4, Bank: evidence.SHA256, BootApps: &DigestSetRule{Require: []Known{{Digest: image(evidence.SHA256, "shimx64.efi")}}}},
					{PCR: 12, Bank: evidence.SHA1, Events: []EventRule{{Digest: verifytestDigest(evidence.SHA1, "Windows Boot Manager measurement 0 of win1.example")}}},
				}
			},
			want: []string{fmt.Sprintf("PCR 12 (sha1) cannot be proven: event %d carries no sha1 digest; reference vmm needs its sha1 events (1 event rule)", verifytest.WindowsFirstPartial)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n.EventLog = tc.log
			m := verifiedNode(t, n, tc.sel)
			r := ref("vmm", VMM, tc.expect(m)...)
			if err := r.Validate(); err != nil {
				t.Fatal(err)
			}
			res := Evaluate(Approve(nil, DefaultName, []*Reference{r}), map[string]*Reference{"vmm": r}, m)
			if tc.trusted != (res.Level == verdict.Trusted) {
				t.Fatalf("level %s, reasons %v", res.Level, res.Reasons)
			}
			var got []string
			for _, r := range res.Reasons {
				if r.Code != verdict.CodeUnproven {
					t.Errorf("reason %v, want code %s", r, verdict.CodeUnproven)
				}
				got = append(got, r.Message)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("reasons\n  %q\nwant\n  %q", got, tc.want)
			}
		})
	}
}

// verifytestDigest is how verifytest's logs digest a measurement.
func verifytestDigest(b evidence.Bank, s string) Hex {
	if b == evidence.SHA1 {
		h := sha1.Sum([]byte(s))
		return h[:]
	}
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// TestEvaluateUnprovenPinned: a PCR whose events the log cannot prove in
// the expectation's bank is still decided by its value when that value is
// one the reference approves and pins (its Log replays to it and satisfies
// the rule): the quote proves the value, and the value the events.
func TestEvaluateUnprovenPinned(t *testing.T) {
	shim := d(evidence.SHA256, "shim")
	v := eventlog.Extend(evidence.SHA256, make([]byte, 32), shim)
	e := Expectation{PCR: 4, Bank: evidence.SHA256, Digests: []Hex{v},
		BootApps: &DigestSetRule{Require: []Known{{Digest: shim}}},
		Log:      []EventRule{{Digest: shim, Type: "EV_EFI_BOOT_SERVICES_APPLICATION"}}}
	m := &verify.Measurements{PCRs: map[evidence.Bank]map[int][]byte{evidence.SHA256: {4: v}},
		Unproven: []verdict.Reason{verdict.PCRReason(verdict.CodeUnproven, 4, "sha256", "PCR 4 (sha256) cannot be proven: the event log is in SHA-1 format, which carries sha1 digests only")}}
	p := &Policy{Name: "p", Version: 1, Require: []Class{VMM}, Approved: map[Class][]string{VMM: {"r"}}}
	if res := Evaluate(p, map[string]*Reference{"r": ref("r", VMM, e)}, m); res.Level != verdict.Trusted {
		t.Fatalf("pinned value: %v", res.Reasons)
	}
	e.Log = nil // nothing pins the events: the rule needs them
	if res := Evaluate(p, map[string]*Reference{"r": ref("r", VMM, e)}, m); res.Level != verdict.Untrusted || res.Reasons[0].Code != verdict.CodeUnproven {
		t.Fatalf("unpinned value: %s %v", res.Level, res.Reasons)
	}
}
