package verify_test

import (
	"bytes"
	"crypto/rand"
	"slices"
	"strings"
	"sync"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

var algs = []verifytest.Alg{verifytest.RSA2048, verifytest.RSA2048PSS, verifytest.P256}

// RSA key generation takes a while: tests share one node per kind and copy
// it before changing anything.
var (
	nodesMu sync.Mutex
	nodes   = map[verifytest.Alg]*verifytest.Node{}
)

func node(t testing.TB, alg verifytest.Alg) *verifytest.Node {
	t.Helper()
	nodesMu.Lock()
	defer nodesMu.Unlock()
	n, ok := nodes[alg]
	if !ok {
		var err error
		if n, err = verifytest.NewNode(alg, "node1.example"); err != nil {
			t.Fatal(err)
		}
		nodes[alg] = n
	}
	c := *n
	c.Selection = verifytest.DefaultSelection()
	return &c
}

func enrolled(t testing.TB, n *verifytest.Node) *verify.AK {
	t.Helper()
	ak, err := verify.ParseAK(n.AK.Public())
	if err != nil {
		t.Fatalf("ParseAK: %v", err)
	}
	return ak
}

func newNonce(t testing.TB) []byte {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func evidenceFor(t testing.TB, n *verifytest.Node, nonce []byte) *evidence.Evidence {
	t.Helper()
	ev, err := n.Evidence(nonce)
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	return ev
}

func codes(r verify.Result) []string {
	var cs []string
	for _, reason := range r.Reasons {
		cs = append(cs, reason.Code)
	}
	return cs
}

// provenEvents lists the non-EV_NO_ACTION events of log on the given PCRs.
func provenEvents(t testing.TB, log []byte, pcrs ...int) []eventlog.Event {
	t.Helper()
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	var out []eventlog.Event
	for _, e := range l.Events {
		if e.Type != eventlog.EvNoAction && slices.Contains(pcrs, e.PCR) {
			out = append(out, e)
		}
	}
	return out
}

func TestVerifyValid(t *testing.T) {
	for _, alg := range algs {
		t.Run(alg.String(), func(t *testing.T) {
			n := node(t, alg)
			ak := enrolled(t, n)
			nonce := newNonce(t)
			ev := evidenceFor(t, n, nonce)
			res := ak.Verify(verify.Input{Nonce: nonce, Required: verifytest.DefaultSelection(), Evidence: ev})
			if !res.OK() {
				t.Fatalf("Verify: %v", res.Reasons)
			}
			q := res.Quote
			if q.Clock == 0 || q.ResetCount != 3 || !q.Safe || q.FirmwareVersion != verifytest.FirmwareVersion {
				t.Errorf("QuoteInfo = %+v", q)
			}
			if len(q.Selection) != 1 || q.Selection[0].Bank != evidence.SHA256 || !slices.Equal(q.Selection[0].PCRs, []int{0, 1, 2, 3, 4, 5, 6, 7}) {
				t.Errorf("QuoteInfo.Selection = %v", q.Selection)
			}
			m := res.Measurements
			if len(m.PCRs) != 1 || len(m.PCRs[evidence.SHA256]) != 8 {
				t.Fatalf("Measurements.PCRs = %v, want sha256 PCRs 0-7", m.PCRs)
			}
			for _, p := range ev.PCRs {
				if !bytes.Equal(m.PCRs[p.Bank][p.Index], p.Digest) {
					t.Errorf("Measurements PCR %d = %x, want %x", p.Index, m.PCRs[p.Bank][p.Index], p.Digest)
				}
			}
			want := provenEvents(t, n.EventLog, 0, 1, 2, 3, 4, 5, 6, 7)
			if len(m.Events) != len(want) || len(want) < 30 {
				t.Fatalf("%d events proven, want %d (the log's events on PCRs 0-7)", len(m.Events), len(want))
			}
			for i, e := range m.Events {
				if e.Index != want[i].Index || e.PCR != want[i].PCR || !bytes.Equal(e.Data, want[i].Data) {
					t.Errorf("event %d = %+v, want %+v", i, e, want[i])
				}
				// Only the quoted bank's digest is proven.
				if len(e.Digests) != 1 || e.Digests[0].Bank != evidence.SHA256 || !bytes.Equal(e.Digests[0].Value, want[i].Digest(evidence.SHA256)) {
					t.Errorf("event %d digests = %v, want only the sha256 one", i, e.Digests)
				}
			}
			if m.DRTMEvents != nil {
				t.Errorf("DRTMEvents = %v without a DRTM log", m.DRTMEvents)
			}
		})
	}
}

func TestVerifyTwoBanksAndDRTM(t *testing.T) {
	n := node(t, verifytest.P256)
	n.DRTMLog = verifytest.DRTMLog("xen-4.17").Bytes()
	n.Selection = []evidence.Selection{
		{Bank: evidence.SHA1, PCRs: []int{0, 4, 17, 18}},
		{Bank: evidence.SHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 18, 19}},
	}
	ak := enrolled(t, n)
	nonce := newNonce(t)
	res := ak.Verify(verify.Input{Nonce: nonce, Required: n.Selection, Evidence: evidenceFor(t, n, nonce)})
	if !res.OK() {
		t.Fatalf("Verify: %v", res.Reasons)
	}
	if got := len(res.Measurements.PCRs[evidence.SHA1]) + len(res.Measurements.PCRs[evidence.SHA256]); got != 17 {
		t.Errorf("%d PCR values proven, want 17", got)
	}
	if want := provenEvents(t, n.EventLog, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9); len(res.Measurements.Events) != len(want) {
		t.Errorf("%d SRTM events proven, want %d", len(res.Measurements.Events), len(want))
	}
	for _, e := range res.Measurements.Events {
		wantBanks := 1 // PCRs quoted only in sha256
		if e.PCR == 0 || e.PCR == 4 {
			wantBanks = 2
		}
		if len(e.Digests) != wantBanks {
			t.Errorf("event %d on PCR %d carries %d digests, want %d", e.Index, e.PCR, len(e.Digests), wantBanks)
		}
	}
	if want := provenEvents(t, n.DRTMLog, 17, 18, 19); len(res.Measurements.DRTMEvents) != len(want) || len(want) != 9 {
		t.Errorf("%d DRTM events proven, want %d", len(res.Measurements.DRTMEvents), len(want))
	}
}

func TestVerifyNoLaunchReplaysFromOnes(t *testing.T) {
	// Without a DRTM log PCRs 17-22 stay all-ones: the quote covers them and
	// verification proves exactly that (the policy then rejects it).
	n := node(t, verifytest.P256)
	n.Selection = []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 17, 18}}}
	ak := enrolled(t, n)
	nonce := newNonce(t)
	res := ak.Verify(verify.Input{Nonce: nonce, Evidence: evidenceFor(t, n, nonce)})
	if !res.OK() {
		t.Fatalf("Verify: %v", res.Reasons)
	}
	if got := res.Measurements.PCRs[evidence.SHA256][17]; !bytes.Equal(got, bytes.Repeat([]byte{0xff}, 32)) {
		t.Errorf("PCR 17 = %x, want all-ones", got)
	}
}

// mutation changes a valid evidence (or the input around it) before Verify.
type mutation func(t *testing.T, n *verifytest.Node, in *verify.Input)

// requote replaces the quote with one made by n's AK over a.
func requote(t *testing.T, n *verifytest.Node, in *verify.Input, change func(a *verifytest.Attest)) {
	t.Helper()
	a, err := n.AK.NewAttest(in.Nonce, n.Selection, in.Evidence.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	change(&a)
	in.Evidence.Quote = a.Marshal()
	if in.Evidence.Signature, err = n.AK.Sign(in.Evidence.Quote); err != nil {
		t.Fatal(err)
	}
}

// relog replaces the SRTM log with one rebuilt from the parsed events after change.
func relog(t *testing.T, in *verify.Input, change func(evs []eventlog.Event) []eventlog.Event) {
	t.Helper()
	l, err := eventlog.Parse(in.Evidence.EventLog)
	if err != nil {
		t.Fatal(err)
	}
	b := eventlog.NewBuilder(l.Banks...)
	for _, e := range change(slices.Clone(l.Events)) {
		b.AddDigests(e.PCR, e.Type, e.Digests, e.Data)
	}
	in.Evidence.EventLog = b.Bytes()
}

func lastEventOn(evs []eventlog.Event, pcr int) int {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].PCR == pcr && evs[i].Type != eventlog.EvNoAction {
			return i
		}
	}
	panic("no event")
}

func TestVerifyRejects(t *testing.T) {
	other, err := verifytest.NewNode(verifytest.P256, "node2.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		alg      verifytest.Alg
		mutate   mutation
		code     string
		pcr      int // for PCR-specific reasons, the PCR named (-1: none)
		bank     evidence.Bank
		nReasons int
	}{
		{name: "no evidence", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) { in.Evidence = nil }, code: verdict.CodeMalformed},
		{name: "evidence invalid", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) { in.Evidence.PCRs[0].Digest = []byte{1} }, code: verdict.CodeMalformed},
		{name: "quote truncated", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.Quote = in.Evidence.Quote[:len(in.Evidence.Quote)-1]
		}, code: verdict.CodeMalformed},
		{name: "quote header truncated", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.Quote = in.Evidence.Quote[:20]
		}, code: verdict.CodeMalformed},
		{name: "quote with trailing bytes", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.Quote = append(in.Evidence.Quote, 0)
		}, code: verdict.CodeMalformed},
		{name: "signature truncated", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.Signature = in.Evidence.Signature[:10]
		}, code: verdict.CodeMalformed},
		{name: "attest of certify type", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			requote(t, n, in, func(a *verifytest.Attest) { a.Type = 0x8017 })
		}, code: verdict.CodeQuoteType},
		{name: "attest without TPM_GENERATED magic", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			requote(t, n, in, func(a *verifytest.Attest) { a.Magic = 0x12345678 })
		}, code: verdict.CodeQuoteType},
		{name: "bad signature", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.Signature[len(in.Evidence.Signature)-1] ^= 1
		}, code: verdict.CodeSignature},
		{name: "bad ecdsa signature", alg: verifytest.P256, mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.Signature[10] ^= 1
		}, code: verdict.CodeSignature},
		{name: "quote changed after signing", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.Quote[len(in.Evidence.Quote)-1] ^= 1
		}, code: verdict.CodeSignature},
		{name: "pss signature for a pkcs1 AK", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.Signature[1] = 0x16 // TPM_ALG_RSAPSS
		}, code: verdict.CodeSignature},
		{name: "quote signed by another AK", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			ev, err := other.Evidence(in.Nonce)
			if err != nil {
				t.Fatal(err)
			}
			in.Evidence = ev
		}, code: verdict.CodeSignature},
		{name: "quote naming another signer", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			requote(t, n, in, func(a *verifytest.Attest) { a.QualifiedSigner = verifytest.QualifiedName(other.AK.Name()) })
		}, code: verdict.CodeSigner},
		{name: "quote naming the AK's name, not its qualified name", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			requote(t, n, in, func(a *verifytest.Attest) { a.QualifiedSigner = n.AK.Name() })
		}, code: verdict.CodeSigner},
		{name: "wrong nonce", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Nonce = newNonce(t)
		}, code: verdict.CodeNonce},
		{name: "nonce prefix", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			requote(t, n, in, func(a *verifytest.Attest) { a.ExtraData = a.ExtraData[:16] })
		}, code: verdict.CodeNonce},
		{name: "challenge nonce too short", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Nonce = nil
			requote(t, n, in, func(a *verifytest.Attest) {})
		}, code: verdict.CodeNonce},
		{name: "required PCR outside selection", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Required = []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 8}}}
		}, code: verdict.CodeSelection, pcr: 8, bank: evidence.SHA256},
		{name: "required bank not quoted", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Required = []evidence.Selection{{Bank: evidence.SHA384, PCRs: []int{0}}}
		}, code: verdict.CodeSelection, pcr: 0, bank: evidence.SHA384},
		{name: "two required PCRs outside selection", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Required = []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{17, 18}}}
		}, code: verdict.CodeSelection, pcr: 17, bank: evidence.SHA256, nReasons: 2},
		{name: "PCR value changed after quoting", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.PCRs[3].Digest = bytes.Repeat([]byte{7}, 32)
		}, code: verdict.CodePCRDigest},
		{name: "quoted PCR not reported", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.PCRs = in.Evidence.PCRs[1:]
		}, code: verdict.CodePCRDigest},
		{name: "PCR values reported in another order", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			// Order in the evidence does not matter; values do.
			slices.Reverse(in.Evidence.PCRs)
			in.Evidence.PCRs[0].Digest, in.Evidence.PCRs[1].Digest = in.Evidence.PCRs[1].Digest, in.Evidence.PCRs[0].Digest
		}, code: verdict.CodePCRDigest},
		{name: "event log malformed", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.EventLog = in.Evidence.EventLog[:len(in.Evidence.EventLog)-3]
		}, code: verdict.CodeEventLog},
		{name: "event digest changed", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			relog(t, in, func(evs []eventlog.Event) []eventlog.Event {
				i := lastEventOn(evs, 4)
				evs[i].Digests = []eventlog.Digest{evs[i].Digests[0], {Bank: evidence.SHA256, Value: make([]byte, 32)}}
				return evs
			})
		}, code: verdict.CodeReplay, pcr: 4, bank: evidence.SHA256},
		{name: "event log truncated", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			relog(t, in, func(evs []eventlog.Event) []eventlog.Event { return evs[:len(evs)-1] })
		}, code: verdict.CodeReplay, pcr: 1, bank: evidence.SHA256},
		{name: "event log without PCR 7", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			relog(t, in, func(evs []eventlog.Event) []eventlog.Event {
				return slices.DeleteFunc(evs, func(e eventlog.Event) bool { return e.PCR == 7 })
			})
		}, code: verdict.CodeReplay, pcr: 7, bank: evidence.SHA256},
		{name: "events reordered", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			relog(t, in, func(evs []eventlog.Event) []eventlog.Event {
				i, j := lastEventOn(evs, 2), lastEventOn(evs[:lastEventOn(evs, 2)], 2)
				evs[i], evs[j] = evs[j], evs[i]
				return evs
			})
		}, code: verdict.CodeReplay, pcr: 2, bank: evidence.SHA256},
		{name: "event inserted", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			relog(t, in, func(evs []eventlog.Event) []eventlog.Event {
				b := eventlog.NewBuilder(evidence.SHA1, evidence.SHA256)
				return slices.Insert(evs, 5, b.Add(1, eventlog.EvPostCode, []byte("rootkit")))
			})
		}, code: verdict.CodeReplay, pcr: 1, bank: evidence.SHA256},
		{name: "DRTM log extends an SRTM PCR", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			b := verifytest.DRTMLog("kvm")
			b.Add(4, eventlog.EvIPL, []byte("x"))
			in.Evidence.DRTMLog = b.Bytes()
		}, code: verdict.CodeEventLog, pcr: 4},
		{name: "DRTM log malformed", mutate: func(t *testing.T, n *verifytest.Node, in *verify.Input) {
			in.Evidence.DRTMLog = []byte("not a log")
		}, code: verdict.CodeEventLog},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := node(t, tc.alg)
			ak := enrolled(t, n)
			nonce := newNonce(t)
			in := verify.Input{Nonce: nonce, Required: verifytest.DefaultSelection(), Evidence: evidenceFor(t, n, nonce)}
			tc.mutate(t, n, &in)
			res := ak.Verify(in)
			want := max(tc.nReasons, 1)
			if len(res.Reasons) != want || res.Reasons[0].Code != tc.code {
				t.Fatalf("reasons = %v, want %d with code %s", res.Reasons, want, tc.code)
			}
			r := res.Reasons[0]
			if tc.pcr != 0 || tc.bank != "" {
				if r.PCR == nil || *r.PCR != tc.pcr || r.Bank != string(tc.bank) {
					t.Errorf("reason locates PCR %v bank %q, want PCR %d bank %q", r.PCR, r.Bank, tc.pcr, tc.bank)
				}
			}
			if r.Message == "" {
				t.Error("reason without a message")
			}
			if res.OK() {
				t.Error("OK() with reasons")
			}
		})
	}
}

func TestVerifyDRTMReplayMismatch(t *testing.T) {
	n := node(t, verifytest.P256)
	n.DRTMLog = verifytest.DRTMLog("xen-4.17").Bytes()
	n.Selection = []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 17, 18}}}
	ak := enrolled(t, n)
	nonce := newNonce(t)
	ev := evidenceFor(t, n, nonce)
	// The node booted another hypervisor than its DRTM log claims.
	ev.DRTMLog = verifytest.DRTMLog("xen-4.18").Bytes()
	res := ak.Verify(verify.Input{Nonce: nonce, Evidence: ev})
	if len(res.Reasons) != 1 || res.Reasons[0].Code != verdict.CodeReplay || *res.Reasons[0].PCR != 18 {
		t.Fatalf("reasons = %v, want one %s on PCR 18", res.Reasons, verdict.CodeReplay)
	}
	if !strings.Contains(res.Reasons[0].Message, "DRTM") {
		t.Errorf("message %q does not say it is the DRTM log", res.Reasons[0].Message)
	}
	// PCR 17 still replayed: its events are proven, PCR 18's are not.
	for _, e := range res.Measurements.DRTMEvents {
		if e.PCR != 17 {
			t.Errorf("event on PCR %d reached Measurements though its PCR did not replay", e.PCR)
		}
	}
	if len(res.Measurements.DRTMEvents) != 5 {
		t.Errorf("%d DRTM events proven, want PCR 17's 5", len(res.Measurements.DRTMEvents))
	}
}

func TestVerifyIgnoresValuesOutsideSelection(t *testing.T) {
	n := node(t, verifytest.RSA2048)
	ak := enrolled(t, n)
	nonce := newNonce(t)
	ev := evidenceFor(t, n, nonce)
	// An attacker adds values the quote does not cover.
	ev.PCRs = append(ev.PCRs,
		evidence.PCR{Bank: evidence.SHA256, Index: 8, Digest: bytes.Repeat([]byte{8}, 32)},
		evidence.PCR{Bank: evidence.SHA1, Index: 0, Digest: bytes.Repeat([]byte{1}, 20)},
		evidence.PCR{Bank: evidence.SHA256, Index: 18, Digest: make([]byte, 32)},
	)
	res := ak.Verify(verify.Input{Nonce: nonce, Required: verifytest.DefaultSelection(), Evidence: ev})
	if !res.OK() {
		t.Fatalf("Verify: %v", res.Reasons)
	}
	if _, ok := res.Measurements.PCRs[evidence.SHA1]; ok {
		t.Error("unquoted sha1 values reached Measurements")
	}
	for _, p := range []int{8, 18} {
		if _, ok := res.Measurements.PCRs[evidence.SHA256][p]; ok {
			t.Errorf("unquoted PCR %d reached Measurements", p)
		}
	}
	for _, e := range res.Measurements.Events {
		if e.PCR > 7 {
			t.Errorf("event on unquoted PCR %d reached Measurements", e.PCR)
		}
	}
}

func TestVerifyEventDataIsNotCovered(t *testing.T) {
	// Event data is a description: changing it does not change the replay,
	// which is why Measurements call it untrusted.
	n := node(t, verifytest.P256)
	ak := enrolled(t, n)
	nonce := newNonce(t)
	in := verify.Input{Nonce: nonce, Evidence: evidenceFor(t, n, nonce)}
	relog(t, &in, func(evs []eventlog.Event) []eventlog.Event {
		i := lastEventOn(evs, 4)
		evs[i].Data = []byte("something else")
		return evs
	})
	if res := ak.Verify(in); !res.OK() {
		t.Fatalf("Verify: %v", res.Reasons)
	}
}

func TestVerifyStopsAfterCryptoFailure(t *testing.T) {
	n := node(t, verifytest.RSA2048)
	ak := enrolled(t, n)
	nonce := newNonce(t)
	ev := evidenceFor(t, n, nonce)
	ev.Signature[20] ^= 1
	ev.PCRs[0].Digest = make([]byte, 32)
	res := ak.Verify(verify.Input{Nonce: newNonce(t), Required: []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{9}}}, Evidence: ev})
	if !slices.Equal(codes(res), []string{verdict.CodeSignature}) {
		t.Fatalf("reasons = %v, want only %s", res.Reasons, verdict.CodeSignature)
	}
	if res.Quote.Clock != 0 || res.Quote.Selection != nil || res.Measurements.PCRs != nil {
		t.Errorf("unverified quote data in the result: %+v", res)
	}
}

func TestVerifyReportsSelectionAndReplayTogether(t *testing.T) {
	n := node(t, verifytest.P256)
	ak := enrolled(t, n)
	nonce := newNonce(t)
	in := verify.Input{Nonce: nonce, Required: []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 10}}}, Evidence: evidenceFor(t, n, nonce)}
	relog(t, &in, func(evs []eventlog.Event) []eventlog.Event { return evs[:len(evs)-1] })
	res := ak.Verify(in)
	if !slices.Equal(codes(res), []string{verdict.CodeSelection, verdict.CodeReplay}) {
		t.Fatalf("reasons = %v, want selection then replay", res.Reasons)
	}
	if len(res.Measurements.PCRs[evidence.SHA256]) != 8 {
		t.Errorf("quoted PCR values are proven even when the log fails; got %v", res.Measurements.PCRs)
	}
	for _, e := range res.Measurements.Events {
		if e.PCR == 1 {
			t.Errorf("event %d of PCR 1, which did not replay, reached Measurements", e.Index)
		}
	}
}

func TestVerifyConcurrent(t *testing.T) {
	n := node(t, verifytest.P256)
	ak := enrolled(t, n)
	var wg sync.WaitGroup
	for range 8 {
		nonce := newNonce(t)
		ev := evidenceFor(t, n, nonce)
		wg.Go(func() {
			if res := ak.Verify(verify.Input{Nonce: nonce, Evidence: ev}); !res.OK() {
				t.Errorf("Verify: %v", res.Reasons)
			}
		})
	}
	wg.Wait()
}
