package verify

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"slices"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/verify/verifytest"
	"trustpool/internal/wire"
)

// fuzzNode is the attester whose evidence seeds the fuzzers. Its key is new
// in every process, so stored corpus entries exercise decoding, not the
// signature; FuzzVerifySigned signs in the fuzz function to get past it.
func fuzzNode(f *testing.F) (*verifytest.Node, *AK) {
	f.Helper()
	n, err := verifytest.NewNode(verifytest.P256, "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	n.DRTMLog = verifytest.DRTMLog("xen").Bytes()
	n.Selection = []evidence.Selection{
		{Bank: evidence.SHA1, PCRs: []int{0, 7}},
		{Bank: evidence.SHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 17, 18}},
	}
	ak, err := ParseAK(n.AK.Public())
	if err != nil {
		f.Fatal(err)
	}
	return n, ak
}

var fuzzNonce = bytes.Repeat([]byte{0x5a}, 32)

func FuzzDecodeAttest(f *testing.F) {
	n, _ := fuzzNode(f)
	ev, err := n.Evidence(fuzzNonce)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ev.Quote)
	f.Add([]byte(append(attestHeader(), be{}.u32(2).u16(0xb).u8(3).raw(0xff, 0, 0).u16(0x12).u8(0).b2(make([]byte, 32))...)))
	f.Fuzz(func(t *testing.T, b []byte) {
		var a attest
		r := wire.BigEndian(b)
		if decodeAttestHeader(&r, &a) != nil || decodeQuoteInfo(&r, &a) != nil {
			return
		}
		if len(a.selection) != len(a.masks) {
			t.Fatalf("%d selections, %d masks", len(a.selection), len(a.masks))
		}
		for i, s := range a.selection {
			if s.Validate() != nil || !slices.IsSorted(s.PCRs) {
				t.Fatalf("decoded invalid selection %v", s)
			}
			var m uint32
			for _, p := range s.PCRs {
				m |= 1 << p
			}
			if m != a.masks[i] {
				t.Fatalf("mask %x for %v", a.masks[i], s.PCRs)
			}
		}
	})
}

func FuzzDecodeSignature(f *testing.F) {
	n, _ := fuzzNode(f)
	ev, err := n.Evidence(fuzzNonce)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ev.Signature)
	f.Add([]byte(be{}.u16(algRSASSA).u16(algSHA256).b2(make([]byte, 256))))
	f.Add([]byte(be{}.u16(algRSAPSS).u16(algSHA384).b2(make([]byte, 384))))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSignature(b)
		if err != nil {
			return
		}
		// The encoding is canonical: writing the fields back gives the input.
		out := be{}.u16(s.alg).u16(s.hash)
		if s.alg == algECDSA {
			out = out.b2(s.r).b2(s.s)
		} else {
			out = out.b2(s.sig)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("decoded %+v, which encodes as %x, not %x", s, []byte(out), b)
		}
	})
}

func FuzzParseAK(f *testing.F) {
	for _, alg := range []verifytest.Alg{verifytest.RSA2048PSS, verifytest.P256} {
		k, err := verifytest.NewSoftAK(alg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(k.Public())
		f.Add(verifytest.Template(k.Signer().Public(), algNull, verifytest.AKAttributes|verifytest.AttrDecrypt))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ak, err := ParseAK(b)
		if err != nil {
			return
		}
		attrs := binary.BigEndian.Uint32(b[4:8])
		if attrs&(attrSign|attrRestricted|attrFixedTPM) != attrSign|attrRestricted|attrFixedTPM || attrs&attrDecrypt != 0 {
			t.Fatalf("accepted attributes %08x", attrs)
		}
		var h []byte
		switch binary.BigEndian.Uint16(b[2:4]) {
		case algSHA256:
			s := sha256.Sum256(b)
			h = s[:]
		case algSHA384:
			s := sha512.Sum384(b)
			h = s[:]
		default:
			t.Fatalf("accepted nameAlg %x", b[2:4])
		}
		if !bytes.Equal(ak.Name(), append(slices.Clone(b[2:4]), h...)) {
			t.Fatalf("Name() = %x", ak.Name())
		}
	})
}

// encodePCRs and decodePCRs give the fuzzer a flat form of a PCR list:
// records of bank (0 sha1, 1 sha256, 2 sha384, anything else unknown),
// index, and a digest of the bank's size.
func encodePCRs(pcrs []evidence.PCR) []byte {
	var b []byte
	for _, p := range pcrs {
		b = append(b, byte(bankIndex(p.Bank)), byte(p.Index))
		b = append(b, p.Digest...)
	}
	return b
}

func decodePCRs(b []byte) []evidence.PCR {
	var out []evidence.PCR
	for len(b) >= 2 {
		bank := evidence.Bank("unknown")
		if int(b[0]) < len(evidence.Banks) {
			bank = evidence.Banks[b[0]]
		}
		size := max(bank.Size(), 1)
		if len(b) < 2+size {
			break
		}
		out = append(out, evidence.PCR{Bank: bank, Index: int(int8(b[1])), Digest: b[2 : 2+size]})
		b = b[2+size:]
	}
	return out
}

// checkResult asserts what must hold of any Result: nothing unproven in
// Measurements.
func checkResult(t *testing.T, res Result, ev *evidence.Evidence) {
	t.Helper()
	if res.OK() != (len(res.Reasons) == 0) {
		t.Fatal("OK() disagrees with Reasons")
	}
	for _, r := range res.Reasons {
		if r.Code == "" || r.Message == "" {
			t.Fatalf("empty reason %+v", r)
		}
	}
	selected := func(b evidence.Bank, p int) bool {
		for _, s := range res.Quote.Selection {
			if s.Bank == b && slices.Contains(s.PCRs, p) {
				return true
			}
		}
		return false
	}
	for b, m := range res.Measurements.PCRs {
		for p, v := range m {
			if !selected(b, p) {
				t.Fatalf("PCR %d (%s) in Measurements but not in the signed selection", p, b)
			}
			if !bytes.Equal(v, ev.Value(b, p)) {
				t.Fatalf("PCR %d (%s) in Measurements is not the reported value", p, b)
			}
		}
	}
	for _, r := range res.Measurements.Unproven {
		if r.Code != verdict.CodeUnproven || r.PCR == nil || *r.PCR < 0 || *r.PCR >= evidence.NumPCRs || !selected(evidence.Bank(r.Bank), *r.PCR) {
			t.Fatalf("unproven reason %+v for a PCR outside the signed selection", r)
		}
	}
	for _, evs := range [][]eventlog.Event{res.Measurements.Events, res.Measurements.DRTMEvents} {
		for _, e := range evs {
			if e.Type == eventlog.EvNoAction || e.PCR < 0 || e.PCR >= evidence.NumPCRs {
				t.Fatalf("event %d (%s on PCR %d) in Measurements", e.Index, eventlog.TypeName(e.Type), e.PCR)
			}
			if len(e.Digests) == 0 {
				t.Fatalf("event %d without proven digests", e.Index)
			}
			for _, d := range e.Digests {
				if _, ok := res.Measurements.PCRs[d.Bank][e.PCR]; !ok {
					t.Fatalf("event %d on PCR %d (%s), which is not a proven PCR", e.Index, e.PCR, d.Bank)
				}
			}
		}
	}
}

func allPCRs() []int {
	out := make([]int, evidence.NumPCRs)
	for i := range out {
		out[i] = i
	}
	return out
}

// FuzzVerify runs Verify on arbitrary evidence.
func FuzzVerify(f *testing.F) {
	n, ak := fuzzNode(f)
	ev, err := n.Evidence(fuzzNonce)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ev.Quote, ev.Signature, encodePCRs(ev.PCRs), ev.EventLog, ev.DRTMLog)
	f.Add(ev.Quote, ev.Signature, encodePCRs(ev.PCRs[1:]), ev.EventLog[:100], []byte(nil))
	f.Fuzz(func(t *testing.T, quote, sig, pcrs, log, drtm []byte) {
		ev := &evidence.Evidence{Quote: quote, Signature: sig, PCRs: decodePCRs(pcrs), EventLog: log, DRTMLog: drtm}
		res := ak.Verify(Input{Nonce: fuzzNonce, Required: n.Selection, Evidence: ev})
		checkResult(t, res, ev)
	})
}

// FuzzVerifySigned runs Verify on evidence whose quote the AK really
// signed, over a fuzzed selection, fuzzed PCR values and fuzzed logs, so
// that the fuzzer explores everything after the signature check: selection,
// PCR digest, log parsing and replay.
func FuzzVerifySigned(f *testing.F) {
	n, ak := fuzzNode(f)
	ev, err := n.Evidence(fuzzNonce)
	if err != nil {
		f.Fatal(err)
	}
	sel := func(ss []evidence.Selection) []byte {
		var b []byte
		for _, s := range ss {
			var m uint32
			for _, p := range s.PCRs {
				m |= 1 << p
			}
			b = append(b, byte(bankIndex(s.Bank)))
			b = binary.BigEndian.AppendUint32(b, m)
		}
		return b
	}
	f.Add(sel(n.Selection), encodePCRs(ev.PCRs), ev.EventLog, ev.DRTMLog, false)
	f.Add(sel(n.Selection), encodePCRs(ev.PCRs), ev.EventLog, ev.DRTMLog, true)
	// Logs Parse accepts since issue 14: Windows partial-digest events with
	// an EV_NO_ACTION on PCR 0xFFFFFFFF, and a SHA-1 format log, quoted in
	// both banks over every PCR.
	all := []evidence.Selection{{Bank: evidence.SHA1, PCRs: allPCRs()}, {Bank: evidence.SHA256, PCRs: allPCRs()}}
	for _, log := range [][]byte{verifytest.WindowsBootLog("fuzz").Bytes(), verifytest.SHA1BootLog("fuzz").Bytes()} {
		w := *n
		w.EventLog, w.DRTMLog, w.Selection = log, nil, all
		wev, err := w.Evidence(fuzzNonce)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sel(all), encodePCRs(wev.PCRs), log, []byte(nil), false)
	}
	f.Fuzz(func(t *testing.T, selBytes, pcrBytes, log, drtm []byte, extra bool) {
		// Selection records: bank byte, 32-bit PCR mask.
		var sel []evidence.Selection
		for ; len(selBytes) >= 5 && len(sel) < 3; selBytes = selBytes[5:] {
			if int(selBytes[0]) >= len(evidence.Banks) {
				continue
			}
			s := evidence.Selection{Bank: evidence.Banks[selBytes[0]]}
			m := binary.BigEndian.Uint32(selBytes[1:5])
			for p := range evidence.NumPCRs {
				if m&(1<<p) != 0 {
					s.PCRs = append(s.PCRs, p)
				}
			}
			if len(s.PCRs) > 0 && !slices.ContainsFunc(sel, func(x evidence.Selection) bool { return x.Bank == s.Bank }) {
				sel = append(sel, s)
			}
		}
		pcrs := decodePCRs(pcrBytes)
		// The quote covers the values reported; where one is missing the
		// TPM would have used its own, which the fuzzer also controls.
		var quoted []evidence.PCR
		for _, s := range sel {
			for _, p := range s.PCRs {
				v := (&evidence.Evidence{PCRs: pcrs}).Value(s.Bank, p)
				if v == nil {
					v = bytes.Repeat([]byte{byte(p)}, s.Bank.Size())
					if extra {
						pcrs = append(pcrs, evidence.PCR{Bank: s.Bank, Index: p, Digest: v})
					}
				}
				quoted = append(quoted, evidence.PCR{Bank: s.Bank, Index: p, Digest: v})
			}
		}
		a, err := n.AK.NewAttest(fuzzNonce, sel, quoted)
		if err != nil {
			t.Fatal(err)
		}
		quote := a.Marshal()
		sig, err := n.AK.Sign(quote)
		if err != nil {
			t.Fatal(err)
		}
		ev := &evidence.Evidence{Quote: quote, Signature: sig, PCRs: pcrs, EventLog: log, DRTMLog: drtm}
		res := ak.Verify(Input{Nonce: fuzzNonce, Evidence: ev})
		checkResult(t, res, ev)
		if ev.Validate() == nil && len(sel) > 0 && extra && res.Quote.Selection == nil {
			t.Fatalf("a validly signed quote was refused before the signature check: %v", res.Reasons)
		}
	})
}
