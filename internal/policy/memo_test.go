package policy

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

// withoutMemo copies refs with every memo dropped: each check is then made
// in full, as for references built in Go.
func withoutMemo(refs []*Reference) map[string]*Reference {
	out := map[string]*Reference{}
	for _, r := range refs {
		c := *r
		c.Expect = append([]Expectation(nil), r.Expect...)
		for i := range c.Expect {
			c.Expect[i].memo = nil
		}
		out[c.Name] = &c
	}
	return out
}

// cloneMeasurements deep-copies m through JSON, as the store keeps it.
func cloneMeasurements(t *testing.T, m *verify.Measurements) *verify.Measurements {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out verify.Measurements
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

// TestMemoAnswersAsInFull: remembered answers are those a full check gives,
// for the host they were made for and for hosts whose events differ in any
// byte the rules read, digests, data no digest covers, types or indices.
func TestMemoAnswersAsInFull(t *testing.T) {
	golden := realHost(t, "rhel8-uefi.bin", evidence.SHA256)
	refs, err := Golden("rhel8", 1, golden, nil)
	if err != nil {
		t.Fatal(err)
	}
	refs = clone(t, refs) // memos made by UnmarshalJSON
	p := Approve(nil, DefaultName, refs)
	memo, full := byName(refs), withoutMemo(refs)

	find := func(m *verify.Measurements, pcr int, typ uint32) *eventlog.Event {
		for i := range m.Events {
			if m.Events[i].PCR == pcr && m.Events[i].Type == typ {
				return &m.Events[i]
			}
		}
		t.Fatalf("no event of type %s on PCR %d", eventlog.TypeName(typ), pcr)
		return nil
	}
	tests := []struct {
		name    string
		modify  func(m *verify.Measurements)
		trusted bool
	}{
		{"the golden host", func(*verify.Measurements) {}, true},
		{"a Secure Boot variable's data no longer hashes to its digest", func(m *verify.Measurements) {
			e := find(m, 7, eventlog.EvEFIVariableDriverConf)
			e.Data = bytes.Clone(e.Data)
			e.Data[len(e.Data)-1] ^= 1
		}, false},
		{"a variable event relabelled", func(m *verify.Measurements) {
			find(m, 7, eventlog.EvEFIVariableDriverConf).Type = eventlog.EvEFIAction
		}, false},
		{"the kernel command line relabelled", func(m *verify.Measurements) {
			for i := range m.Events {
				if e := &m.Events[i]; e.PCR == 8 && bytes.Contains(e.Data, []byte("kernel_cmdline")) {
					e.Type = eventlog.EvEventTag
				}
			}
		}, false},
		{"an event index changed", func(m *verify.Measurements) {
			find(m, 7, eventlog.EvEFIVariableDriverConf).Index += 1000
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Each evaluation runs twice: the first may fill the memo,
			// the second answers from it.
			for round := range 2 {
				m := cloneMeasurements(t, golden)
				tc.modify(m)
				got, want := Evaluate(p, memo, m), Evaluate(p, full, m)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("round %d: with the memo %+v, in full %+v", round, got, want)
				}
				if (got.Level == verdict.Trusted) != tc.trusted {
					t.Fatalf("round %d: %s %v", round, got.Level, got.Reasons)
				}
			}
		})
	}
}

// TestPinnedByValue: a PCR value the reference approves, to which the
// known-good host's recorded events replay and over which its event rules
// and boot_apps and files rules hold, decides those rules; PCR values alone
// then decide the host trusted, as the full check does. Rules that read
// event data (secure_boot, cmdline) are never decided so.
func TestPinnedByValue(t *testing.T) {
	n, err := verifytest.NewNode(verifytest.P256, "node1.example")
	if err != nil {
		t.Fatal(err)
	}
	pcrs := []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}}}
	golden := verifiedNode(t, n, pcrs)
	refs, err := Golden("g", 1, golden, nil)
	if err != nil {
		t.Fatal(err)
	}
	vmm := byName(refs)["g-vmm"]
	if e := expectationOf(t, vmm, 4); e.BootApps == nil || len(e.Log) == 0 {
		t.Fatalf("golden import proposed no boot_apps rule on PCR 4: %+v", e)
	}
	p := Approve(nil, DefaultName, refs)
	valuesOnly := func(m *verify.Measurements) *verify.Measurements {
		return &verify.Measurements{PCRs: m.PCRs}
	}
	for name, rm := range map[string]map[string]*Reference{"Golden": byName(refs), "stored": byName(clone(t, refs)), "no memo": withoutMemo(refs)} {
		t.Run(name, func(t *testing.T) {
			if NeedsEvents(p, rm) {
				t.Fatal("NeedsEvents for boot_apps and files rules with their Log")
			}
			if res := Evaluate(p, rm, valuesOnly(golden)); res.Level != verdict.Trusted {
				t.Fatalf("the golden host's PCR values alone: %v", res.Reasons)
			}
			if res := Evaluate(p, rm, golden); res.Level != verdict.Trusted {
				t.Fatalf("the golden host: %v", res.Reasons)
			}
		})
	}

	// The value decides, not the labels the host's log puts on the events
	// it pins: relabelled boot applications still quote the known-good
	// chain (the full check of the rule would have found none).
	relabelled := cloneMeasurements(t, golden)
	for i := range relabelled.Events {
		if e := &relabelled.Events[i]; e.Type == eventlog.EvEFIBootServicesApp {
			e.Type = eventlog.EvEFIAction
		}
	}
	if res := Evaluate(p, byName(refs), relabelled); res.Level != verdict.Trusted {
		t.Fatalf("relabelled boot applications: %v", res.Reasons)
	}

	// Another boot chain: the value no longer matches, and neither values
	// alone nor the events decide it trusted.
	l, err := eventlog.Parse(verifytest.BootLog("node1.example").Bytes())
	if err != nil {
		t.Fatal(err)
	}
	b := eventlog.NewBuilder(l.Banks...)
	for _, e := range l.Events {
		if bytes.Contains(e.Data, []byte("grubx64.efi")) {
			for i := range e.Digests {
				e.Digests[i].Value = bytes.Repeat([]byte{0xee}, e.Digests[i].Bank.Size())
			}
		}
		b.AddDigests(e.PCR, e.Type, e.Digests, e.Data)
	}
	n.EventLog = b.Bytes()
	other := verifiedNode(t, n, pcrs)
	for _, m := range []*verify.Measurements{valuesOnly(other), other} {
		if res := Evaluate(p, byName(refs), m); res.Level != verdict.Untrusted {
			t.Fatalf("another boot loader: %s", res.Level)
		}
	}

	// A rule the Log does not satisfy is not decided by the value: the
	// host's own events are checked, and fail.
	strict := clone(t, refs)
	e := expectationOf(t, byName(strict)["g-vmm"], 4)
	e.BootApps = &DigestSetRule{Allow: []Known{{Digest: bytes.Repeat([]byte{1}, 32)}}}
	e.newMemo()
	if NeedsEvents(p, byName(strict)) {
		t.Error("NeedsEvents depends on the rule's content, want only on its kind")
	}
	if res := Evaluate(p, byName(strict), golden); res.Level != verdict.Untrusted || len(res.Reasons) != 1 || res.Reasons[0].Code != verdict.CodeBootRule {
		t.Fatalf("a boot_apps rule the known-good log breaks: %s %v", res.Level, res.Reasons)
	}
	if res := Evaluate(p, byName(strict), valuesOnly(golden)); res.Level != verdict.Untrusted {
		t.Fatalf("values alone against a rule the known-good log breaks: %s", res.Level)
	}

	// Without the Log, or with a rule that reads event data, values alone
	// cannot decide.
	noLog := clone(t, refs)
	for _, r := range noLog {
		for i := range r.Expect {
			r.Expect[i].Log = nil
		}
	}
	if !NeedsEvents(p, byName(noLog)) {
		t.Error("NeedsEvents is false without the Log")
	}
	if res := Evaluate(p, byName(noLog), valuesOnly(golden)); res.Level != verdict.Untrusted {
		t.Error("values alone decided rules without the Log")
	}
	rhel := realHost(t, "rhel8-uefi.bin", evidence.SHA256)
	rrefs, err := Golden("rhel8", 1, rhel, nil)
	if err != nil {
		t.Fatal(err)
	}
	rp := Approve(nil, DefaultName, rrefs)
	if !NeedsEvents(rp, byName(rrefs)) {
		t.Error("NeedsEvents is false with secure_boot and cmdline rules")
	}
	if res := Evaluate(rp, byName(rrefs), valuesOnly(rhel)); res.Level != verdict.Untrusted {
		t.Error("values alone decided secure_boot and cmdline rules")
	}
}

// TestMemoConcurrent evaluates hosts sharing references from several
// goroutines, as the server's workers do (run with -race).
func TestMemoConcurrent(t *testing.T) {
	golden := realHost(t, "rhel8-uefi.bin", evidence.SHA256)
	refs, err := Golden("rhel8", 1, golden, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, rm := Approve(nil, DefaultName, refs), byName(refs)
	done := make(chan verdict.Level)
	for range 4 {
		go func() {
			level := verdict.Trusted
			for range 50 {
				if r := Evaluate(p, rm, golden); r.Level != verdict.Trusted {
					level = r.Level
				}
			}
			done <- level
		}()
	}
	for range 4 {
		if l := <-done; l != verdict.Trusted {
			t.Errorf("a concurrent evaluation was %s", l)
		}
	}
}
