package verify_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

func pcrRange(from, to int) []int {
	var out []int
	for p := from; p <= to; p++ {
		out = append(out, p)
	}
	return out
}

// unprovenSet renders Measurements.Unproven as "PCR/bank: message" lines,
// checking each reason's shape.
func unprovenSet(t *testing.T, m verify.Measurements) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range m.Unproven {
		if r.Code != verdict.CodeUnproven || r.PCR == nil || r.Bank == "" {
			t.Fatalf("malformed unproven reason %+v", r)
		}
		out[fmt.Sprintf("%d/%s", *r.PCR, r.Bank)] = r.Message
	}
	return out
}

// TestVerifyWindowsLog verifies a sha1+sha256 log whose PCR 11-14 events
// carry sha256 only and that ends with an EV_NO_ACTION on PCR 0xFFFFFFFF.
func TestVerifyWindowsLog(t *testing.T) {
	n := node(t, verifytest.P256)
	n.EventLog = verifytest.WindowsBootLog("win1.example").Bytes()
	pcrs := append(pcrRange(0, 7), 11, 12, 13, 14)
	n.Selection = []evidence.Selection{{Bank: evidence.SHA1, PCRs: pcrs}, {Bank: evidence.SHA256, PCRs: pcrs}}
	ak := enrolled(t, n)
	nonce := newNonce(t)
	res := ak.Verify(verify.Input{Nonce: nonce, Required: n.Selection, Evidence: evidenceFor(t, n, nonce)})
	if !res.OK() {
		t.Fatalf("Verify: %v", res.Reasons)
	}
	got := unprovenSet(t, res.Measurements)
	first := verifytest.WindowsFirstPartial
	want := map[string]string{
		"12/sha1": fmt.Sprintf("PCR 12 (sha1) cannot be proven: event %d carries no sha1 digest", first),
		"13/sha1": fmt.Sprintf("PCR 13 (sha1) cannot be proven: event %d carries no sha1 digest", first+1),
		"11/sha1": fmt.Sprintf("PCR 11 (sha1) cannot be proven: event %d carries no sha1 digest", first+2),
		"14/sha1": fmt.Sprintf("PCR 14 (sha1) cannot be proven: event %d carries no sha1 digest", first+4),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("unproven %s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("unproven = %v, want exactly PCRs 11-14 in sha1", got)
	}
	// PCRs 0-7 are proven in both banks; 11-14 in sha256 only.
	byPCR := map[int][]evidence.Bank{}
	for _, e := range res.Measurements.Events {
		var banks []evidence.Bank
		for _, d := range e.Digests {
			banks = append(banks, d.Bank)
		}
		if prev, ok := byPCR[e.PCR]; ok && !slices.Equal(prev, banks) {
			t.Errorf("PCR %d events proven in %v and %v", e.PCR, prev, banks)
		}
		byPCR[e.PCR] = banks
	}
	for p := range 8 {
		if !slices.Equal(byPCR[p], []evidence.Bank{evidence.SHA1, evidence.SHA256}) {
			t.Errorf("PCR %d events proven in %v, want sha1 and sha256", p, byPCR[p])
		}
	}
	for _, p := range []int{11, 12, 13, 14} {
		if !slices.Equal(byPCR[p], []evidence.Bank{evidence.SHA256}) {
			t.Errorf("PCR %d events proven in %v, want sha256 only", p, byPCR[p])
		}
	}

	// A changed sha256-only event is still caught in sha256.
	l, err := eventlog.Parse(n.EventLog)
	if err != nil {
		t.Fatal(err)
	}
	ev := evidenceFor(t, n, nonce)
	l.Events[first].Digests[0].Value[0] ^= 1 // aliases a copy of n.EventLog
	tampered := rebuild(t, l)
	ev.EventLog = tampered
	res = ak.Verify(verify.Input{Nonce: nonce, Required: n.Selection, Evidence: ev})
	if res.OK() || !slices.ContainsFunc(res.Reasons, func(r verdict.Reason) bool {
		return r.Code == verdict.CodeReplay && r.PCR != nil && *r.PCR == 12 && r.Bank == "sha256"
	}) {
		t.Errorf("tampered sha256-only event: %v, want a replay failure on PCR 12 (sha256)", res.Reasons)
	}
}

// rebuild writes a parsed log back to bytes.
func rebuild(t *testing.T, l *eventlog.Log) []byte {
	t.Helper()
	b := eventlog.NewBuilder(l.Banks...)
	if l.Format == eventlog.SHA1Format {
		b = eventlog.NewSHA1Builder()
	}
	for _, e := range l.Events {
		b.AddDigests(e.PCR, e.Type, e.Digests, e.Data)
	}
	return b.Bytes()
}

// TestVerifySHA1FormatLog: a SHA-1 format log proves sha1 PCRs and their
// events, and says for each sha256 PCR it extends that it cannot prove it.
func TestVerifySHA1FormatLog(t *testing.T) {
	n := node(t, verifytest.RSA2048)
	n.EventLog = verifytest.SHA1BootLog("old-fw.example").Bytes()
	n.Selection = []evidence.Selection{{Bank: evidence.SHA1, PCRs: pcrRange(0, 9)}, {Bank: evidence.SHA256, PCRs: pcrRange(0, 9)}}
	ak := enrolled(t, n)
	nonce := newNonce(t)
	res := ak.Verify(verify.Input{Nonce: nonce, Required: n.Selection, Evidence: evidenceFor(t, n, nonce)})
	if !res.OK() {
		t.Fatalf("Verify: %v", res.Reasons)
	}
	got := unprovenSet(t, res.Measurements)
	for p := range 10 {
		want := fmt.Sprintf("PCR %d (sha256) cannot be proven: the event log is in SHA-1 format, which carries sha1 digests only", p)
		if got[fmt.Sprintf("%d/sha256", p)] != want {
			t.Errorf("unproven %d/sha256 = %q, want %q", p, got[fmt.Sprintf("%d/sha256", p)], want)
		}
	}
	if len(got) != 10 {
		t.Errorf("unproven = %v, want sha256 PCRs 0-9 only", got)
	}
	want := provenEvents(t, n.EventLog, pcrRange(0, 9)...)
	if len(res.Measurements.Events) != len(want) {
		t.Fatalf("%d events proven, want %d", len(res.Measurements.Events), len(want))
	}
	for _, e := range res.Measurements.Events {
		if len(e.Digests) != 1 || e.Digests[0].Bank != evidence.SHA1 {
			t.Fatalf("event %d proven in %v, want sha1 only (never a sha256 stand-in)", e.Index, e.Digests)
		}
	}

	// Quoting sha256 alone, nothing in the log is proven.
	n.Selection = []evidence.Selection{{Bank: evidence.SHA256, PCRs: pcrRange(0, 7)}}
	res = ak.Verify(verify.Input{Nonce: nonce, Required: n.Selection, Evidence: evidenceFor(t, n, nonce)})
	if !res.OK() || res.Measurements.Events != nil || len(res.Measurements.Unproven) != 8 {
		t.Fatalf("sha256 quote with a SHA-1 log: reasons %v, %d events, unproven %v", res.Reasons, len(res.Measurements.Events), res.Measurements.Unproven)
	}
	// A SHA-1 log that does not replay to the quoted sha1 values fails.
	n.Selection = []evidence.Selection{{Bank: evidence.SHA1, PCRs: pcrRange(0, 7)}}
	ev := evidenceFor(t, n, nonce)
	ev.EventLog = verifytest.SHA1BootLog("other-fw.example").Bytes()
	res = ak.Verify(verify.Input{Nonce: nonce, Required: n.Selection, Evidence: ev})
	if res.OK() || !slices.Contains(codes(res), verdict.CodeReplay) {
		t.Errorf("foreign SHA-1 log: %v, want a replay failure", res.Reasons)
	}
}

// TestVerifyRealSHA1Logs verifies quotes (made by the software AK) of the
// PCR values that real SHA-1 format logs replay to, the Windows one of a GCE
// shielded VM among them, quoting every sha1 PCR.
func TestVerifyRealSHA1Logs(t *testing.T) {
	for _, name := range []string{"windows_gcp_shielded_vm.bin", "debian-10.bin"} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("..", "eventlog", "testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			n := node(t, verifytest.P256)
			n.EventLog = raw
			n.Selection = []evidence.Selection{{Bank: evidence.SHA1, PCRs: pcrRange(0, 23)}, {Bank: evidence.SHA256, PCRs: pcrRange(0, 7)}}
			ak := enrolled(t, n)
			nonce := newNonce(t)
			res := ak.Verify(verify.Input{Nonce: nonce, Required: n.Selection, Evidence: evidenceFor(t, n, nonce)})
			if !res.OK() {
				t.Fatalf("Verify: %v", res.Reasons)
			}
			if len(res.Measurements.Events) < 10 {
				t.Errorf("%d events proven", len(res.Measurements.Events))
			}
			for _, r := range res.Measurements.Unproven {
				if r.Bank != "sha256" || !strings.Contains(r.Message, "SHA-1 format") {
					t.Errorf("unproven %v", r)
				}
			}
		})
	}
}

// TestVerifyOutOfRangePCRs: whatever PCR index a log's events name, Verify
// returns a result and never indexes out of range.
func TestVerifyOutOfRangePCRs(t *testing.T) {
	n := node(t, verifytest.P256)
	n.Selection = []evidence.Selection{{Bank: evidence.SHA256, PCRs: pcrRange(0, 23)}}
	ak := enrolled(t, n)
	nonce := newNonce(t)
	for _, tc := range []struct {
		name string
		add  func(b *eventlog.Builder)
		ok   bool
	}{
		{"no-action on 0xffffffff", func(b *eventlog.Builder) { b.Add(0xffffffff, eventlog.EvNoAction, nil) }, true},
		{"no-action on 24", func(b *eventlog.Builder) { b.Add(24, eventlog.EvNoAction, []byte("x")) }, true},
		{"separator on 0xffffffff", func(b *eventlog.Builder) { b.Add(0xffffffff, eventlog.EvSeparator, nil) }, false},
		{"ipl on 24", func(b *eventlog.Builder) { b.Add(24, eventlog.EvIPL, nil) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, drtm := range []bool{false, true} {
				ev := evidenceFor(t, n, nonce)
				b := verifytest.BootLog("node1.example")
				if drtm {
					b = verifytest.DRTMLog("xen")
				}
				tc.add(b)
				if drtm {
					ev.DRTMLog = b.Bytes()
				} else {
					ev.EventLog = b.Bytes()
				}
				res := ak.Verify(verify.Input{Nonce: nonce, Evidence: ev})
				malformed := slices.Contains(codes(res), verdict.CodeEventLog)
				if tc.ok && malformed || !tc.ok && !malformed {
					t.Errorf("drtm=%v: reasons %v", drtm, res.Reasons)
				}
				if !tc.ok && !strings.Contains(res.Reasons[0].Message, "out of range") {
					t.Errorf("drtm=%v: reason %q does not say the PCR is out of range", drtm, res.Reasons[0].Message)
				}
			}
		})
	}
}
