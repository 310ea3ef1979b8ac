package appraisal_test

import (
	"reflect"
	"testing"
	"time"

	"trustpool/internal/appraisal"
	"trustpool/internal/evidence"
	"trustpool/internal/knowngood"
	"trustpool/internal/policy"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

var (
	t0       = time.Date(2026, 11, 3, 14, 0, 0, 0, time.UTC)
	validity = 90 * time.Second
	collect  = evidence.Selection{Bank: evidence.SHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 18, 19}}
)

// node is a simulated node and the set that trusts it (its golden import).
func node(t *testing.T, name string) (*verifytest.Node, *verify.AK, *knowngood.Set) {
	t.Helper()
	n, err := verifytest.NewNode(verifytest.RSA2048, name)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := verify.ParseAK(n.AK.Public())
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("golden-nonce-0123456789abcdef")
	sel := []evidence.Selection{collect}
	ev, err := n.EvidenceFor(nonce, sel)
	if err != nil {
		t.Fatal(err)
	}
	res := ak.Verify(verify.Input{Nonce: nonce, Required: sel, Evidence: ev})
	if !res.OK() {
		t.Fatalf("golden evidence: %v", res.Reasons)
	}
	refs, err := policy.Golden("g", 1, &res.Measurements, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := policy.Approve(nil, policy.DefaultName, refs)
	p.Version = 1
	kg := (*knowngood.Set)(nil).With(&policy.Change{References: refs, Policies: []*policy.Policy{p}})
	return n, ak, kg
}

func codes(v verdict.Verdict) []string {
	var out []string
	for _, r := range v.Reasons {
		out = append(out, r.Code)
	}
	return out
}

// Appraisal is a function of its inputs: the same inputs give the same
// verdict, established at the time given, and the record of what verified
// is judged the same way when read back.
func TestAppraise(t *testing.T) {
	n, ak, kg := node(t, "node1")
	h := appraisal.Host{Name: "node1"}
	nonce := []byte("nonce-for-this-challenge-000001")
	sel := appraisal.Selection(kg, h, collect)
	ev, err := n.EvidenceFor(nonce, sel)
	if err != nil {
		t.Fatal(err)
	}
	in := appraisal.Input{Host: h, AK: ak, Nonce: nonce, KnownGood: kg, Evidence: ev, Now: t0, Validity: validity}
	v, rec := appraisal.Appraise(in)
	if v.Level != verdict.Trusted || !v.VTime.Equal(t0) || !v.Expiry.Equal(t0.Add(validity)) || rec == nil {
		t.Fatalf("golden host: %+v, record %v", v, rec != nil)
	}
	if again, _ := appraisal.Appraise(in); !reflect.DeepEqual(again, v) {
		t.Fatalf("a second appraisal of the same inputs: %+v, want %+v", again, v)
	}
	stored, err := appraisal.JudgeStored(h, kg, rec.Measurements, rec.VerifiedAt, validity)
	if err != nil || !reflect.DeepEqual(stored, v) {
		t.Fatalf("judged from the record: %+v %v, want %+v", stored, err, v)
	}

	for _, tc := range []struct {
		name string
		in   func(appraisal.Input) appraisal.Input
		want verdict.Level
		code string
	}{
		{"another nonce", func(in appraisal.Input) appraisal.Input {
			in.Nonce = []byte("another-nonce-0000000000000001")
			return in
		},
			verdict.Untrusted, verdict.CodeNonce},
		{"no known-good values", func(in appraisal.Input) appraisal.Input { in.KnownGood = nil; return in },
			verdict.Untrusted, verdict.CodeNoPolicy},
		{"a policy that names no reference", func(in appraisal.Input) appraisal.Input {
			in.KnownGood = kg.With(&policy.Change{Policies: []*policy.Policy{{Name: policy.DefaultName, Require: []policy.Class{policy.BIOS}}}})
			return in
		}, verdict.Untrusted, verdict.CodeNoReference},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, rec := appraisal.Appraise(tc.in(in))
			if v.Level != tc.want || len(v.Reasons) == 0 || v.Reasons[0].Code != tc.code {
				t.Fatalf("%s %v, want %s %s", v.Level, codes(v), tc.want, tc.code)
			}
			if tc.code == verdict.CodeNonce && rec != nil {
				t.Fatal("evidence that did not verify has a record")
			}
		})
	}
}

// A host whose PCR values fail is judged on its full stored measurements
// (the fast path never decides an untrusted verdict): the verdict explains
// as the live appraisal did.
func TestJudgeStoredAgreesOnFailure(t *testing.T) {
	_, _, kg := node(t, "node1")
	other, ak, _ := node(t, "node2")
	h := appraisal.Host{Name: "node2"}
	nonce := []byte("nonce-for-this-challenge-000002")
	ev, err := other.EvidenceFor(nonce, appraisal.Selection(kg, h, collect))
	if err != nil {
		t.Fatal(err)
	}
	v, rec := appraisal.Appraise(appraisal.Input{Host: h, AK: ak, Nonce: nonce, KnownGood: kg, Evidence: ev, Now: t0, Validity: validity})
	if v.Level != verdict.Untrusted || rec == nil {
		t.Fatalf("another host's values: %+v", v)
	}
	stored, err := appraisal.JudgeStored(h, kg, rec.Measurements, rec.VerifiedAt, validity)
	if err != nil || !reflect.DeepEqual(stored, v) {
		t.Fatalf("judged from the record: %+v %v\nwant %+v", stored, err, v)
	}
	if _, err := appraisal.JudgeStored(h, kg, []byte(`{"pcrs":`), t0, validity); err == nil {
		t.Fatal("truncated stored measurements judged")
	}
}

func TestMerge(t *testing.T) {
	got := appraisal.Merge([]evidence.Selection{
		{Bank: evidence.SHA256, PCRs: []int{18, 0}}, {Bank: evidence.SHA1, PCRs: []int{7}}, {Bank: evidence.SHA256, PCRs: []int{0, 17}},
	})
	want := []evidence.Selection{{Bank: evidence.SHA1, PCRs: []int{7}}, {Bank: evidence.SHA256, PCRs: []int{0, 17, 18}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}
