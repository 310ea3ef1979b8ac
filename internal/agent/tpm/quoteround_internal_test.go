package tpm

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"trustpool/internal/evidence"
	"trustpool/internal/verify"
)

// TestQuoteWithPCRsRetries injects an extend between the read and the quote
// of the first round: the evidence returned must still be consistent (its
// values hash to the signed digest and it verifies), and the extend is in it.
func TestQuoteWithPCRsRetries(t *testing.T) {
	tp, err := Open(SimulatorAddr)
	if errors.Is(err, ErrNoSimulator) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	pub, err := tp.AK()
	if err != nil {
		t.Fatal(err)
	}
	ak, err := verify.ParseAK(pub)
	if err != nil {
		t.Fatal(err)
	}
	sel := []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 7, 16}}}
	nonce := bytes.Repeat([]byte{3}, 32)
	extend := func(round int) {
		if err := tp.Extend(16, map[evidence.Bank][]byte{evidence.SHA256: bytes.Repeat([]byte{byte(round + 1)}, 32)}); err != nil {
			t.Fatal(err)
		}
	}

	rounds := 0
	attest, sig, pcrs, err := tp.quoteRound(nonce, sel, func(round int) {
		rounds++
		if round == 0 {
			extend(round)
		}
	})
	if err != nil {
		t.Fatalf("quoteRound: %v", err)
	}
	if rounds != 2 {
		t.Errorf("%d rounds, want 2 (the first one's PCR 16 changed under it)", rounds)
	}
	now, err := tp.ReadPCRs(sel)
	if err != nil {
		t.Fatal(err)
	}
	for i := range now {
		if !bytes.Equal(now[i].Digest, pcrs[i].Digest) {
			t.Errorf("PCR %d returned %x, the TPM holds %x", now[i].Index, pcrs[i].Digest, now[i].Digest)
		}
	}
	res := ak.Verify(verify.Input{Nonce: nonce, Required: sel, Evidence: &evidence.Evidence{Quote: attest, Signature: sig, PCRs: pcrs}})
	if !res.OK() {
		t.Fatalf("evidence does not verify: %v", res.Reasons)
	}

	// Without the retry the same interleaving gives inconsistent evidence.
	before, err := tp.ReadPCRs(sel)
	if err != nil {
		t.Fatal(err)
	}
	extend(5)
	attest, sig, err = tp.Quote(nonce, sel)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := quoteCovers(attest, before); ok || err != nil {
		t.Errorf("quoteCovers of stale values = %v, %v; want false", ok, err)
	}
	if res := ak.Verify(verify.Input{Nonce: nonce, Evidence: &evidence.Evidence{Quote: attest, Signature: sig, PCRs: before}}); res.OK() {
		t.Error("stale values verified")
	}

	// A PCR that changes in both rounds is an error, not bad evidence.
	if _, _, _, err := tp.quoteRound(nonce, sel, extend); !errors.Is(err, ErrPCRsChanging) {
		t.Errorf("quoteRound with an extend in every round = %v, want ErrPCRsChanging", err)
	}
	// The plain entry point makes one consistent round.
	attest, sig, pcrs, err = tp.QuoteWithPCRs(nonce, sel)
	if err != nil {
		t.Fatal(err)
	}
	if res := ak.Verify(verify.Input{Nonce: nonce, Evidence: &evidence.Evidence{Quote: attest, Signature: sig, PCRs: pcrs}}); !res.OK() {
		t.Errorf("QuoteWithPCRs evidence: %v", res.Reasons)
	}
}
