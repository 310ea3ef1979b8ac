package tpm_test

import (
	"testing"

	"trustpool/internal/agent/swtpm/swtpmtest"
	"trustpool/internal/agent/tpm"
	"trustpool/internal/evidence"
)

// benchmarkQuote measures one challenge's TPM work: a quote and a PCR read
// over PCRs 0-23 of the SHA-256 bank.
func benchmarkQuote(b *testing.B, tp *tpm.TPM) {
	sel := []evidence.Selection{{Bank: evidence.SHA256, PCRs: allPCRs}}
	nonce := make([]byte, 32)
	if _, err := tp.AK(); err != nil { // create the AK outside the loop
		b.Fatal(err)
	}
	for b.Loop() {
		if _, _, err := tp.Quote(nonce, sel); err != nil {
			b.Fatal(err)
		}
		if _, err := tp.ReadPCRs(sel); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkQuoteSimulator(b *testing.B) {
	tp, err := tpm.Open(tpm.SimulatorAddr)
	skipWithoutSimulator(b, err)
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	benchmarkQuote(b, tp)
}

func BenchmarkQuoteSwtpm(b *testing.B) {
	p := swtpmtest.Start(b, "")
	tp, err := tpm.Open(p.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer tp.Close()
	benchmarkQuote(b, tp)
}

// BenchmarkCreateAKSwtpm measures what the first AK use costs after Open: the
// TPM derives the RSA-2048 primary from its seed.
func BenchmarkCreateAKSwtpm(b *testing.B) {
	p := swtpmtest.Start(b, "")
	for b.Loop() {
		tp, err := tpm.Open(p.Addr())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tp.AK(); err != nil {
			b.Fatal(err)
		}
		if err := tp.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
