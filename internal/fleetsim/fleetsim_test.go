package fleetsim_test

import (
	"bytes"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/fleetsim"
)

// TestWireFormats decodes SoftAK's structures with go-tpm, an independent
// implementation of the TPM 2.0 wire format.
func TestWireFormats(t *testing.T) {
	for _, alg := range []fleetsim.Alg{fleetsim.RSA2048, fleetsim.RSA2048PSS, fleetsim.P256} {
		t.Run(alg.String(), func(t *testing.T) {
			n, err := fleetsim.NewNode(alg, "host")
			if err != nil {
				t.Fatal(err)
			}
			nonce := bytes.Repeat([]byte{9}, 32)
			ev, err := n.Evidence(nonce)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](n.AK.Public())
			if err != nil {
				t.Fatalf("TPMT_PUBLIC: %v", err)
			}
			name, err := tpm2.ObjectName(pub)
			if err != nil || !bytes.Equal(name.Buffer, n.AK.Name()) {
				t.Errorf("Name() = %x, go-tpm computes %x (%v)", n.AK.Name(), name.Buffer, err)
			}
			a, err := tpm2.Unmarshal[tpm2.TPMSAttest](ev.Quote)
			if err != nil {
				t.Fatalf("TPMS_ATTEST: %v", err)
			}
			if a.Magic != tpm2.TPMGeneratedValue || a.Type != tpm2.TPMSTAttestQuote || !bytes.Equal(a.ExtraData.Buffer, nonce) {
				t.Errorf("attest = %+v", a)
			}
			if !bytes.Equal(a.QualifiedSigner.Buffer, fleetsim.QualifiedName(n.AK.Name())) {
				t.Errorf("qualifiedSigner %x", a.QualifiedSigner.Buffer)
			}
			q, err := a.Attested.Quote()
			if err != nil {
				t.Fatal(err)
			}
			if len(q.PCRSelect.PCRSelections) != 1 || !bytes.Equal(q.PCRSelect.PCRSelections[0].PCRSelect, []byte{0xff, 0, 0}) {
				t.Errorf("selection %+v, want sha256 PCRs 0-7", q.PCRSelect)
			}
			if _, err := tpm2.Unmarshal[tpm2.TPMTSignature](ev.Signature); err != nil {
				t.Errorf("TPMT_SIGNATURE: %v", err)
			}
			if len(ev.PCRs) != 8 {
				t.Errorf("%d PCR values, want 8", len(ev.PCRs))
			}
			if err := ev.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestBootLog(t *testing.T) {
	a, err := eventlog.Parse(fleetsim.BootLog("a").Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Events) < 45 || len(a.Events) > 55 {
		t.Errorf("%d events, want about 50", len(a.Events))
	}
	// Two hosts differ only in host-specific PCRs (1: SMBIOS, 5: GPT).
	b, _ := eventlog.Parse(fleetsim.BootLog("b").Bytes())
	va, _, _ := a.Replay(evidence.SHA256, false)
	vb, _, _ := b.Replay(evidence.SHA256, false)
	for i := range va {
		if differ := !bytes.Equal(va[i], vb[i]); differ != (i == 1 || i == 5) {
			t.Errorf("PCR %d differs between hosts: %v", i, differ)
		}
	}
}

func TestNodeWithDRTMLog(t *testing.T) {
	n, err := fleetsim.NewNode(fleetsim.P256, "host")
	if err != nil {
		t.Fatal(err)
	}
	before, err := n.PCRs(evidence.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	n.DRTMLog = fleetsim.DRTMLog("kvm").Bytes()
	after, err := n.PCRs(evidence.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	for i := range before {
		changed := !bytes.Equal(before[i], after[i])
		if changed != (i >= 17 && i <= 22) { // a launch resets 17-22 and extends 17-19
			t.Errorf("PCR %d changed by the launch: %v", i, changed)
		}
	}
	if bytes.Equal(after[20], bytes.Repeat([]byte{0xff}, 32)) {
		t.Error("PCR 20 still all-ones after a dynamic launch")
	}
}
