package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"strings"
	"testing"

	"trustpool/internal/evidence"
	"trustpool/internal/policy"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

func bundleFor(t *testing.T, n *verifytest.Node) *evidence.Bundle {
	t.Helper()
	nonce := bytes.Repeat([]byte{7}, 32)
	ev, err := n.Evidence(nonce)
	if err != nil {
		t.Fatal(err)
	}
	return &evidence.Bundle{Host: "node1.example", AKPublic: n.AK.Public(), Nonce: nonce, Required: n.Selection, Evidence: ev}
}

func writeJSON(t *testing.T, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return writeTemp(t, name, b)
}

func verifyBundleJSON(t *testing.T, o bundleOptions) (int, bundleReport, string) {
	t.Helper()
	o.json = true
	var out, errOut bytes.Buffer
	code := runVerifyBundle(o, &out, &errOut)
	var rep bundleReport
	if code != exitBadInput {
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("--json printed %q: %v", out.String(), err)
		}
	}
	return code, rep, errOut.String()
}

func statuses(rep bundleReport) map[string]string {
	m := map[string]string{}
	for _, c := range rep.Checks {
		m[c.Check] = c.Status
	}
	return m
}

func TestVerifyBundle(t *testing.T) {
	n, err := verifytest.NewNode(verifytest.P256, "node1.example")
	if err != nil {
		t.Fatal(err)
	}
	n.DRTMLog = verifytest.DRTMLog("xen").Bytes()
	n.Selection = []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 17, 18}}}
	good := bundleFor(t, n)

	t.Run("good", func(t *testing.T) {
		code, rep, stderr := verifyBundleJSON(t, bundleOptions{bundle: writeJSON(t, "b.json", good)})
		if code != exitOK || !rep.Verified || len(rep.Reasons) != 0 || rep.Events < 30 || rep.Quote == nil {
			t.Fatalf("exit %d (%s), report %+v", code, stderr, rep)
		}
		for _, c := range rep.Checks {
			if c.Status != "passed" {
				t.Errorf("check %s %s", c.Check, c.Status)
			}
		}
		if len(rep.Checks) != len(bundleChecks) || len(rep.PCRs["sha256"]) != 10 {
			t.Errorf("checks %v, pcrs %v", rep.Checks, rep.PCRs)
		}
		var text bytes.Buffer
		if runVerifyBundle(bundleOptions{bundle: writeJSON(t, "b.json", good)}, &text, &bytes.Buffer{}) != exitOK ||
			!strings.Contains(text.String(), "evidence verifies") || !strings.Contains(text.String(), "signature      passed") {
			t.Errorf("text report:\n%s", text.String())
		}
	})

	t.Run("tampered nonce", func(t *testing.T) {
		b := *good
		b.Nonce = bytes.Repeat([]byte{8}, 32)
		code, rep, _ := verifyBundleJSON(t, bundleOptions{bundle: writeJSON(t, "b.json", &b)})
		st := statuses(rep)
		if code != exitMismatch || rep.Verified || st["signature"] != "passed" || st["nonce"] != "failed" || st["pcr digest"] != "not run" {
			t.Fatalf("exit %d, checks %v, reasons %v", code, st, rep.Reasons)
		}
	})

	t.Run("tampered PCR", func(t *testing.T) {
		b := *good
		ev := *good.Evidence
		ev.PCRs = append([]evidence.PCR(nil), ev.PCRs...)
		ev.PCRs[4].Digest = bytes.Repeat([]byte{0xaa}, 32)
		b.Evidence = &ev
		code, rep, _ := verifyBundleJSON(t, bundleOptions{bundle: writeJSON(t, "b.json", &b)})
		st := statuses(rep)
		if code != exitMismatch || st["pcr digest"] != "failed" || st["nonce"] != "passed" || rep.Reasons[0].Code != verdict.CodePCRDigest {
			t.Fatalf("exit %d, checks %v, reasons %v", code, st, rep.Reasons)
		}
	})

	t.Run("tampered log", func(t *testing.T) {
		b := *good
		ev := *good.Evidence
		ev.EventLog = verifytest.BootLog("intruder.example").Bytes()
		b.Evidence = &ev
		code, rep, _ := verifyBundleJSON(t, bundleOptions{bundle: writeJSON(t, "b.json", &b)})
		if st := statuses(rep); code != exitMismatch || st["event log"] != "failed" || st["pcr digest"] != "passed" {
			t.Fatalf("exit %d, checks %v", code, st)
		}
	})

	// Golden references from the good evidence itself.
	ak, err := verify.ParseAK(n.AK.Public())
	if err != nil {
		t.Fatal(err)
	}
	res := ak.Verify(verify.Input{Nonce: good.Nonce, Evidence: good.Evidence})
	refs, err := policy.Golden("gold", 1, &res.Measurements, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Approve(nil, policy.DefaultName, refs)
	pol.Version = 1
	polFile := writeJSON(t, "policy.json", policy.Change{References: refs, Policies: []*policy.Policy{pol}})

	t.Run("policy trusts the golden host", func(t *testing.T) {
		code, rep, stderr := verifyBundleJSON(t, bundleOptions{bundle: writeJSON(t, "b.json", good), policy: polFile})
		if code != exitOK || rep.Policy == nil || rep.Policy.Level != verdict.Trusted {
			t.Fatalf("exit %d (%s), policy %+v", code, stderr, rep.Policy)
		}
	})

	t.Run("policy refuses another host", func(t *testing.T) {
		m := *n
		m.EventLog = verifytest.BootLog("node2.example").Bytes()
		code, rep, _ := verifyBundleJSON(t, bundleOptions{bundle: writeJSON(t, "b.json", bundleFor(t, &m)), policy: polFile})
		if code != exitMismatch || !rep.Verified || rep.Policy == nil || rep.Policy.Level != verdict.Untrusted {
			t.Fatalf("exit %d, report %+v", code, rep)
		}
	})

	t.Run("SHA-1 log against a sha256 event rule", func(t *testing.T) {
		m := *n
		m.EventLog = verifytest.SHA1BootLog("node1.example").Bytes()
		m.DRTMLog = nil
		m.Selection = verifytest.DefaultSelection()
		shim := sha256.Sum256([]byte("image:shimx64.efi"))
		ref := &policy.Reference{Name: "boot", Version: 1, Class: policy.VMM, Expect: []policy.Expectation{
			{PCR: 4, Bank: evidence.SHA256, Events: []policy.EventRule{{Digest: shim[:], Description: "shimx64.efi"}}},
		}}
		p := policy.Approve(nil, policy.DefaultName, []*policy.Reference{ref})
		p.Version = 1
		file := writeJSON(t, "p.json", policy.Change{References: []*policy.Reference{ref}, Policies: []*policy.Policy{p}})
		bundle := writeJSON(t, "b.json", bundleFor(t, &m))
		code, rep, _ := verifyBundleJSON(t, bundleOptions{bundle: bundle, policy: file})
		if code != exitMismatch || !rep.Verified || rep.Policy == nil || rep.Policy.Level != verdict.Untrusted {
			t.Fatalf("exit %d, report %+v", code, rep)
		}
		r := rep.Policy.Reasons[0]
		if r.PCR == nil || *r.PCR != 4 || r.Bank != "sha256" || r.Code != verdict.CodeUnproven || len(rep.Policy.Reasons) != 1 {
			t.Errorf("policy reasons %+v, want one on PCR 4 (sha256), code %s", rep.Policy.Reasons, verdict.CodeUnproven)
		}
		var text bytes.Buffer
		runVerifyBundle(bundleOptions{bundle: bundle, policy: file}, &text, &bytes.Buffer{})
		if want := "reason: eventlog-unproven: PCR 4 (sha256) cannot be proven: the event log is in SHA-1 format, which carries sha1 digests only; reference boot needs its sha256 events (1 event rule)"; !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	})

	for _, tc := range []struct {
		name, content, want string
	}{
		{"not JSON", "hello", "decode bundle"},
		{"unknown field", `{"ak_public":"AAAA","nonce":"AAAA","evidence":{},"extra":1}`, "unknown field"},
		{"no evidence", `{"ak_public":"AAAA","nonce":"AAAA"}`, "no evidence"},
		{"bad AK", `{"ak_public":"AAAA","nonce":"AAAA","evidence":{}}`, "ak_public"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := verifyBundleJSON(t, bundleOptions{bundle: writeTemp(t, "b.json", []byte(tc.content))})
			if code != exitBadInput || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q, want 2 and %q", code, stderr, tc.want)
			}
		})
	}
	t.Run("bad policy file", func(t *testing.T) {
		code, _, stderr := verifyBundleJSON(t, bundleOptions{bundle: writeJSON(t, "b.json", good), policy: writeTemp(t, "p.json", []byte(`{"policies":[]}`))})
		if code != exitBadInput || !strings.Contains(stderr, "--policy-name") {
			t.Fatalf("exit %d, stderr %q", code, stderr)
		}
	})
}
