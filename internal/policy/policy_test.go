package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"slices"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
)

func d(bank evidence.Bank, s string) []byte {
	h := sha256.Sum256([]byte(string(bank) + s))
	return h[:bank.Size()]
}

func ones(n int) []byte { return bytes.Repeat([]byte{0xff}, n) }

// host builds measurements: PCR values per bank, and events for PCR 18.
func host(pcrs map[evidence.Bank]map[int][]byte, events ...eventlog.Event) *verify.Measurements {
	return &verify.Measurements{PCRs: pcrs, DRTMEvents: events}
}

func event(idx, pcr int, digest []byte, desc string) eventlog.Event {
	return eventlog.Event{Index: idx, PCR: pcr, Type: eventlog.EvTXTCombinedHash,
		Digests: []eventlog.Digest{{Bank: evidence.SHA256, Value: digest}}, Data: []byte(desc)}
}

func ref(name string, class Class, e ...Expectation) *Reference {
	return &Reference{Name: name, Version: 1, Class: class, Expect: e}
}

func pcrIs(r verdict.Reason, code string, pcr int) bool {
	return r.Code == code && r.PCR != nil && *r.PCR == pcr
}

func TestEvaluate(t *testing.T) {
	bios1 := ref("bios-1.0", BIOS, Expectation{PCR: 0, Bank: evidence.SHA256, Digests: []Hex{d(evidence.SHA256, "bios-1.0")}})
	bios2 := ref("bios-2.0", BIOS, Expectation{PCR: 0, Bank: evidence.SHA256, Digests: []Hex{d(evidence.SHA256, "bios-2.0")}})
	bothBanks := ref("bios-banks", BIOS,
		Expectation{PCR: 0, Bank: evidence.SHA1, Digests: []Hex{d(evidence.SHA1, "bios-1.0")}},
		Expectation{PCR: 0, Bank: evidence.SHA256, Digests: []Hex{d(evidence.SHA256, "bios-1.0")}})
	sha1Only := ref("bios-sha1", BIOS, Expectation{PCR: 0, Bank: evidence.SHA1, Digests: []Hex{d(evidence.SHA1, "bios-1.0")}})
	hvRule := ref("kvm-rule", VMM, Expectation{PCR: 18, Bank: evidence.SHA256, Events: []EventRule{{Digest: d(evidence.SHA256, "kvm"), Description: "kvm"}}})
	launch := ref("sinit", Launch, Expectation{PCR: 17, Bank: evidence.SHA256, Digests: []Hex{d(evidence.SHA256, "sinit")}})
	refs := map[string]*Reference{}
	for _, r := range []*Reference{bios1, bios2, bothBanks, sha1Only, hvRule, launch} {
		refs[r.Name] = r
	}
	pol := func(req []Class, approved map[Class][]string) *Policy {
		return &Policy{Name: "p", Version: 1, Require: req, Approved: approved}
	}
	sha256PCR0 := func(v string) map[evidence.Bank]map[int][]byte {
		return map[evidence.Bank]map[int][]byte{evidence.SHA256: {0: d(evidence.SHA256, v)}}
	}
	tests := []struct {
		name     string
		policy   *Policy
		m        *verify.Measurements
		trusted  bool
		code     string
		pcr      int
		matched  string
		noReason bool
	}{
		{name: "digest matches", policy: pol([]Class{BIOS}, map[Class][]string{BIOS: {"bios-1.0"}}),
			m: host(sha256PCR0("bios-1.0")), trusted: true, matched: "bios-1.0"},
		{name: "digest differs", policy: pol([]Class{BIOS}, map[Class][]string{BIOS: {"bios-1.0"}}),
			m: host(sha256PCR0("evil")), code: verdict.CodePCRMismatch, pcr: 0},
		{name: "second approved version matches", policy: pol([]Class{BIOS}, map[Class][]string{BIOS: {"bios-1.0", "bios-2.0"}}),
			m: host(sha256PCR0("bios-2.0")), trusted: true, matched: "bios-2.0"},
		{name: "unapproved version", policy: pol([]Class{BIOS}, map[Class][]string{BIOS: {"bios-1.0"}}),
			m: host(sha256PCR0("bios-2.0")), code: verdict.CodePCRMismatch, pcr: 0},
		{name: "strongest bank decides: sha256 bad, sha1 good", policy: pol([]Class{BIOS}, map[Class][]string{BIOS: {"bios-banks"}}),
			m:    host(map[evidence.Bank]map[int][]byte{evidence.SHA1: {0: d(evidence.SHA1, "bios-1.0")}, evidence.SHA256: {0: d(evidence.SHA256, "evil")}}),
			code: verdict.CodePCRMismatch, pcr: 0},
		{name: "reference only in sha1 is not satisfied by sha256", policy: pol([]Class{BIOS}, map[Class][]string{BIOS: {"bios-sha1"}}),
			m: host(sha256PCR0("bios-1.0")), code: verdict.CodeSelection, pcr: 0},
		{name: "event rule satisfied", policy: pol([]Class{VMM}, map[Class][]string{VMM: {"kvm-rule"}}),
			m:       host(map[evidence.Bank]map[int][]byte{evidence.SHA256: {18: d(evidence.SHA256, "any")}}, event(3, 18, d(evidence.SHA256, "kvm"), "kvm")),
			trusted: true, matched: "kvm-rule"},
		{name: "event rule: event missing", policy: pol([]Class{VMM}, map[Class][]string{VMM: {"kvm-rule"}}),
			m:    host(map[evidence.Bank]map[int][]byte{evidence.SHA256: {18: d(evidence.SHA256, "any")}}, event(3, 18, d(evidence.SHA256, "xen"), "xen")),
			code: verdict.CodeEventMissing, pcr: 18},
		{name: "launch required, PCR 17 all-ones", policy: pol([]Class{Launch}, map[Class][]string{Launch: {"sinit"}}),
			m: host(map[evidence.Bank]map[int][]byte{evidence.SHA256: {17: ones(32)}}), code: verdict.CodeNoLaunch, pcr: 17},
		{name: "launch required, PCR 17 not quoted", policy: pol([]Class{Launch}, map[Class][]string{Launch: {"sinit"}}),
			m: host(sha256PCR0("bios-1.0")), code: verdict.CodeNoLaunch, pcr: 17},
		{name: "launch matches", policy: pol([]Class{Launch}, map[Class][]string{Launch: {"sinit"}}),
			m: host(map[evidence.Bank]map[int][]byte{evidence.SHA256: {17: d(evidence.SHA256, "sinit")}}), trusted: true, matched: "sinit"},
		{name: "required class without approved reference", policy: pol([]Class{BIOS, VMM}, map[Class][]string{BIOS: {"bios-1.0"}}),
			m: host(sha256PCR0("bios-1.0")), code: verdict.CodeNoReference, noReason: true},
		{name: "reference of another class does not count", policy: pol([]Class{VMM}, map[Class][]string{VMM: {"bios-1.0"}}),
			m: host(sha256PCR0("bios-1.0")), code: verdict.CodeNoReference, noReason: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Evaluate(tc.policy, refs, tc.m)
			if tc.trusted {
				if res.Level != verdict.Trusted || len(res.Reasons) != 0 {
					t.Fatalf("got %s %v, want trusted", res.Level, res.Reasons)
				}
				if !slices.Contains(mapsValues(res.Matched), tc.matched) {
					t.Fatalf("matched %v, want %s", res.Matched, tc.matched)
				}
				return
			}
			if res.Level != verdict.Untrusted || len(res.Reasons) == 0 {
				t.Fatalf("got %s, want untrusted", res.Level)
			}
			r := res.Reasons[0]
			if r.Code != tc.code || (!tc.noReason && !pcrIs(r, tc.code, tc.pcr)) {
				t.Fatalf("reason %+v, want %s on PCR %d", r, tc.code, tc.pcr)
			}
		})
	}
}

func mapsValues(m map[Class]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestMismatchNamesTheEvent(t *testing.T) {
	good := host(map[evidence.Bank]map[int][]byte{evidence.SHA256: {17: d(evidence.SHA256, "sinit"), 18: d(evidence.SHA256, "good")}},
		event(1, 18, d(evidence.SHA256, "tboot"), "tboot 1.11"), event(2, 18, d(evidence.SHA256, "kvm"), "hypervisor kvm-6.8"))
	refs, err := Golden("golden", 1, good, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := Approve(nil, DefaultName, refs)
	rm := map[string]*Reference{}
	for _, r := range refs {
		rm[r.Name] = r
	}
	bad := host(map[evidence.Bank]map[int][]byte{evidence.SHA256: {17: d(evidence.SHA256, "sinit"), 18: d(evidence.SHA256, "bad")}},
		event(1, 18, d(evidence.SHA256, "tboot"), "tboot 1.11"), event(2, 18, d(evidence.SHA256, "evil"), "hypervisor kvm-6.8 patched"))
	res := Evaluate(p, rm, bad)
	if res.Level != verdict.Untrusted {
		t.Fatalf("tampered host is %s", res.Level)
	}
	r := res.Reasons[0]
	for _, want := range []string{"PCR 18", "event #2", "hypervisor kvm-6.8 patched", "golden-vmm"} {
		if !bytes.Contains([]byte(r.Message), []byte(want)) {
			t.Errorf("reason %q does not name %q", r.Message, want)
		}
	}
	if r.Class != string(VMM) {
		t.Errorf("class %q, want vmm", r.Class)
	}
	if Evaluate(p, rm, good).Level != verdict.Trusted {
		t.Fatal("the golden host itself is not trusted")
	}
}

// TestRollout: approve v2 beside v1, hosts on either are trusted; retire v1
// and the hosts still on it are not.
func TestRollout(t *testing.T) {
	v1 := ref("hv-v1", VMM, Expectation{PCR: 18, Bank: evidence.SHA256, Digests: []Hex{d(evidence.SHA256, "kvm-6.1")}})
	v2 := ref("hv-v2", VMM, Expectation{PCR: 18, Bank: evidence.SHA256, Digests: []Hex{d(evidence.SHA256, "kvm-6.8")}})
	onV1 := host(map[evidence.Bank]map[int][]byte{evidence.SHA256: {18: d(evidence.SHA256, "kvm-6.1")}})
	onV2 := host(map[evidence.Bank]map[int][]byte{evidence.SHA256: {18: d(evidence.SHA256, "kvm-6.8")}})
	refs := map[string]*Reference{"hv-v1": v1}
	p := Approve(nil, DefaultName, []*Reference{v1})
	if Evaluate(p, refs, onV1).Level != verdict.Trusted || Evaluate(p, refs, onV2).Level != verdict.Untrusted {
		t.Fatal("before the rollout only v1 hosts are trusted")
	}
	refs["hv-v2"] = v2
	p = Approve(p, DefaultName, []*Reference{v2})
	if Evaluate(p, refs, onV1).Level != verdict.Trusted || Evaluate(p, refs, onV2).Level != verdict.Trusted {
		t.Fatal("during the rollout both versions must be trusted")
	}
	delete(refs, "hv-v1") // retired
	if res := Evaluate(p, refs, onV1); res.Level != verdict.Untrusted || !pcrIs(res.Reasons[0], verdict.CodePCRMismatch, 18) {
		t.Fatalf("after retiring v1, a v1 host: %+v", res)
	}
	if Evaluate(p, refs, onV2).Level != verdict.Trusted {
		t.Fatal("after retiring v1, v2 hosts must stay trusted")
	}
}

func TestFor(t *testing.T) {
	pols := map[string]*Policy{
		DefaultName: {Name: DefaultName},
		"gpu":       {Name: "gpu", Selector: map[string]string{"pool": "gpu"}},
		"pci":       {Name: "pci", Selector: map[string]string{"zone": "pci", "pool": "gpu"}},
	}
	tests := []struct {
		explicit string
		labels   map[string]string
		want     string
	}{
		{"", nil, DefaultName},
		{"", map[string]string{"pool": "gpu"}, "gpu"},
		{"", map[string]string{"pool": "gpu", "zone": "pci"}, "gpu"}, // first by name
		{"pci", nil, "pci"},
		{"missing", nil, ""},
	}
	for _, tc := range tests {
		got := For(pols, tc.explicit, tc.labels)
		if (got == nil && tc.want != "") || (got != nil && got.Name != tc.want) {
			t.Errorf("For(%q, %v) = %v, want %q", tc.explicit, tc.labels, got, tc.want)
		}
	}
}

func TestValidateAndJSON(t *testing.T) {
	bad := []string{
		`{"name":"x","class":"firmware","expect":[{"pcr":0,"bank":"sha256","digests":["00"]}]}`,
		`{"name":"x y","class":"bios","expect":[{"pcr":0,"bank":"sha256","digests":["` + string(bytes.Repeat([]byte("00"), 32)) + `"]}]}`,
		`{"name":"x","class":"bios","expect":[{"pcr":24,"bank":"sha256","digests":["` + string(bytes.Repeat([]byte("00"), 32)) + `"]}]}`,
		`{"name":"x","class":"bios","expect":[{"pcr":0,"bank":"md5","digests":["00"]}]}`,
		`{"name":"x","class":"bios","expect":[{"pcr":0,"bank":"sha256"}]}`,
		`{"name":"x","class":"bios","expect":[]}`,
	}
	for _, b := range bad {
		var r Reference
		if err := json.Unmarshal([]byte(b), &r); err == nil {
			if err := r.Validate(); err == nil {
				t.Errorf("accepted %s", b)
			}
		}
	}
	if err := json.Unmarshal([]byte(`{"name":"x","class":"bios","expect":[{"pcr":0,"bank":"sha256","digests":["zz"]}]}`), &Reference{}); err == nil {
		t.Error("accepted a non-hex digest")
	}
	p := &Policy{Name: "trust-all"}
	if p.Validate() == nil {
		t.Error("a policy that requires nothing was accepted")
	}
}

// BenchmarkEvaluate is the policy step of an attestation: a host matching
// golden references for bios, launch and vmm.
func BenchmarkEvaluate(b *testing.B) {
	m := host(map[evidence.Bank]map[int][]byte{evidence.SHA256: {
		0: d(evidence.SHA256, "0"), 1: d(evidence.SHA256, "1"), 2: d(evidence.SHA256, "2"), 3: d(evidence.SHA256, "3"),
		7: d(evidence.SHA256, "7"), 17: d(evidence.SHA256, "sinit"), 18: d(evidence.SHA256, "kvm")}},
		event(1, 18, d(evidence.SHA256, "tboot"), "tboot"), event(2, 18, d(evidence.SHA256, "kvm"), "kvm"))
	refs, err := Golden("g", 1, m, nil)
	if err != nil {
		b.Fatal(err)
	}
	p := Approve(nil, DefaultName, refs)
	rm := map[string]*Reference{}
	for _, r := range refs {
		rm[r.Name] = r
	}
	b.ReportAllocs()
	for b.Loop() {
		if Evaluate(p, rm, m).Level != verdict.Trusted {
			b.Fatal("not trusted")
		}
	}
}
