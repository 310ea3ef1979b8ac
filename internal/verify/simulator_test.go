//go:build cgo

package verify_test

import (
	"bytes"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

// akAttributes are those of trustpool's AK template: a restricted signing
// key that never leaves the TPM.
var akAttributes = tpm2.TPMAObject{
	FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
	UserWithAuth: true, Restricted: true, SignEncrypt: true,
}

var simTemplates = map[string]tpm2.TPMTPublic{
	"RSA-2048 RSASSA-SHA256": {
		Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: akAttributes,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTRSAScheme{
				Scheme:  tpm2.TPMAlgRSASSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)}),
	},
	"P-256 ECDSA-SHA256": {
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: akAttributes,
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
			Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
		}),
	},
}

// TestSimulatorQuote verifies quotes made by the Microsoft reference TPM
// (go-tpm-tools' in-process simulator) with AKs created as primaries of the
// owner hierarchy, over PCRs extended with a Builder log: it pins the wire
// formats and the qualified-name formula to a real TPM implementation.
func TestSimulatorQuote(t *testing.T) {
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("start TPM simulator: %v", err)
	}
	t.Cleanup(func() { sim.Close() })
	tpm := transport.FromReadWriter(sim)

	// Boot: extend every event of a realistic log into the TPM.
	log := verifytest.BootLog("simulated-host").Bytes()
	l, err := eventlog.Parse(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l.Events {
		if e.Type == eventlog.EvNoAction {
			continue
		}
		var ds []tpm2.TPMTHA
		for _, d := range e.Digests {
			ds = append(ds, tpm2.TPMTHA{HashAlg: tpm2.TPMAlgID(d.Bank.AlgID()), Digest: d.Value})
		}
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(e.PCR), Auth: tpm2.PasswordAuth(nil)},
			Digests:   tpm2.TPMLDigestValues{Digests: ds},
		}.Execute(tpm)
		if err != nil {
			t.Fatalf("extend PCR %d: %v", e.PCR, err)
		}
	}

	sel := []evidence.Selection{
		{Bank: evidence.SHA1, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{Bank: evidence.SHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 17}},
	}
	tpmSel := tpm2.TPMLPCRSelection{}
	for _, s := range sel {
		tpmSel.PCRSelections = append(tpmSel.PCRSelections, tpm2.TPMSPCRSelection{
			Hash: tpm2.TPMAlgID(s.Bank.AlgID()), PCRSelect: pcrBitmap(s.PCRs),
		})
	}
	pcrs := readPCRs(t, tpm, sel)

	for name, tmpl := range simTemplates {
		t.Run(name, func(t *testing.T) {
			primary := func(hierarchy tpm2.TPMHandle) *tpm2.CreatePrimaryResponse {
				rsp, err := tpm2.CreatePrimary{PrimaryHandle: hierarchy, InPublic: tpm2.New2B(tmpl)}.Execute(tpm)
				if err != nil {
					t.Fatalf("create primary AK: %v", err)
				}
				t.Cleanup(func() { tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tpm) })
				return rsp
			}
			quote := func(rsp *tpm2.CreatePrimaryResponse, nonce []byte) *evidence.Evidence {
				q, err := tpm2.Quote{
					SignHandle:     tpm2.AuthHandle{Handle: rsp.ObjectHandle, Name: rsp.Name, Auth: tpm2.PasswordAuth(nil)},
					QualifyingData: tpm2.TPM2BData{Buffer: nonce},
					InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
					PCRSelect:      tpmSel,
				}.Execute(tpm)
				if err != nil {
					t.Fatalf("quote: %v", err)
				}
				return &evidence.Evidence{
					Quote: q.Quoted.Bytes(), Signature: tpm2.Marshal(q.Signature),
					PCRs: pcrs, EventLog: log,
				}
			}

			rsp := primary(tpm2.TPMRHOwner)
			ak, err := verify.ParseAK(rsp.OutPublic.Bytes())
			if err != nil {
				t.Fatalf("ParseAK of the TPM's AK: %v", err)
			}
			if !bytes.Equal(ak.Name(), rsp.Name.Buffer) {
				t.Errorf("Name() = %x, the TPM says %x", ak.Name(), rsp.Name.Buffer)
			}

			nonce := newNonce(t)
			ev := quote(rsp, nonce)
			res := ak.Verify(verify.Input{Nonce: nonce, Required: sel, Evidence: ev})
			if !res.OK() {
				t.Fatalf("Verify of a simulator quote: %v", res.Reasons)
			}
			if want := provenEvents(t, log, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14); len(res.Measurements.Events) != len(want) {
				t.Errorf("%d events proven, want %d", len(res.Measurements.Events), len(want))
			}
			if got := res.Measurements.PCRs[evidence.SHA256][17]; !bytes.Equal(got, bytes.Repeat([]byte{0xff}, 32)) {
				t.Errorf("PCR 17 = %x, want all-ones on a TPM without a dynamic launch", got)
			}
			if len(res.Quote.Selection) != 2 || len(res.Quote.Selection[1].PCRs) != 12 {
				t.Errorf("QuoteInfo.Selection = %v, want the requested selection", res.Quote.Selection)
			}

			if res := ak.Verify(verify.Input{Nonce: newNonce(t), Evidence: ev}); len(res.Reasons) != 1 || res.Reasons[0].Code != verdict.CodeNonce {
				t.Errorf("other nonce: reasons %v, want %s", res.Reasons, verdict.CodeNonce)
			}

			// The same template as a primary of the endorsement hierarchy is
			// another key with another qualified name: refused as signer.
			ek := primary(tpm2.TPMRHEndorsement)
			ekAK, err := verify.ParseAK(ek.OutPublic.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			nonce = newNonce(t)
			res = ekAK.Verify(verify.Input{Nonce: nonce, Evidence: quote(ek, nonce)})
			if len(res.Reasons) != 1 || res.Reasons[0].Code != verdict.CodeSigner {
				t.Errorf("endorsement-hierarchy primary: reasons %v, want %s", res.Reasons, verdict.CodeSigner)
			}
		})
	}
}

func pcrBitmap(pcrs []int) []byte {
	b := make([]byte, 3)
	for _, p := range pcrs {
		b[p/8] |= 1 << (p % 8)
	}
	return b
}

// readPCRs reads the selected PCRs, one at a time (TPM2_PCR_Read returns at
// most 8 values per call).
func readPCRs(t *testing.T, tpm transport.TPM, sel []evidence.Selection) []evidence.PCR {
	t.Helper()
	var out []evidence.PCR
	for _, s := range sel {
		for _, p := range s.PCRs {
			rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
				{Hash: tpm2.TPMAlgID(s.Bank.AlgID()), PCRSelect: pcrBitmap([]int{p})},
			}}}.Execute(tpm)
			if err != nil {
				t.Fatalf("read PCR %d (%s): %v", p, s.Bank, err)
			}
			if len(rsp.PCRValues.Digests) != 1 {
				t.Fatalf("read PCR %d (%s): %d values", p, s.Bank, len(rsp.PCRValues.Digests))
			}
			out = append(out, evidence.PCR{Bank: s.Bank, Index: p, Digest: rsp.PCRValues.Digests[0].Buffer})
		}
	}
	return out
}
