package tpm

import (
	"bytes"
	"crypto"
	_ "crypto/sha256" // the AK's scheme hash, for the quote's PCR digest
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"trustpool/internal/evidence"
)

// pcrSelectSize is the size of a PCR bitmap for the 24 PCRs of a PC Client TPM.
const pcrSelectSize = (evidence.NumPCRs + 7) / 8

// Banks returns the allocated PCR banks that trustpool knows, weakest first.
// A bank is allocated when at least one of its PCRs is.
func (t *TPM) Banks() ([]evidence.Bank, error) {
	var banks []evidence.Bank
	err := t.locked("read PCR banks", func(tr transport.TPM) error {
		rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, PropertyCount: 1}.Execute(tr)
		if err != nil {
			return err
		}
		sels, err := rsp.CapabilityData.Data.AssignedPCR()
		if err != nil {
			return fmt.Errorf("decode PCR allocation: %w", err)
		}
		for _, s := range sels.PCRSelections {
			b, ok := evidence.BankForAlg(uint16(s.Hash))
			if ok && slices.ContainsFunc(s.PCRSelect, func(bits byte) bool { return bits != 0 }) {
				banks = append(banks, b)
			}
		}
		return nil
	})
	slices.SortFunc(banks, func(a, b evidence.Bank) int {
		return slices.Index(evidence.Banks, a) - slices.Index(evidence.Banks, b)
	})
	return banks, err
}

// ReadPCRs reads the selected PCRs with TPM2_PCR_Read, which returns at most
// 8 digests per call, and returns them in the order of sel. The values are
// not signed: only a quote over the same selection makes them evidence.
func (t *TPM) ReadPCRs(sel []evidence.Selection) ([]evidence.PCR, error) {
	var out []evidence.PCR
	err := t.locked("read PCRs", func(tr transport.TPM) error {
		if err := validateSelections(sel); err != nil {
			return err
		}
		// pending holds the PCRs not read yet, bank by bank.
		pending := make(map[evidence.Bank][]int, len(sel))
		for _, s := range sel {
			pending[s.Bank] = slices.Clone(s.PCRs)
		}
		got := make(map[pcrKey][]byte)
		for len(pending) > 0 {
			req := make([]evidence.Selection, 0, len(pending))
			for _, s := range sel {
				if p := pending[s.Bank]; len(p) > 0 {
					req = append(req, evidence.Selection{Bank: s.Bank, PCRs: p})
				}
			}
			rsp, err := tpm2.PCRRead{PCRSelectionIn: tpmSelection(req)}.Execute(tr)
			if err != nil {
				return err
			}
			n, err := collectPCRs(rsp, got, pending)
			if err != nil {
				return err
			}
			// A PCR that the TPM leaves out of every answer (a bank that
			// is not allocated) would otherwise loop forever.
			if n == 0 {
				return fmt.Errorf("TPM returned none of the pending PCRs %v (bank not allocated?)", pending)
			}
		}
		for _, s := range sel {
			for _, i := range s.PCRs {
				out = append(out, evidence.PCR{Bank: s.Bank, Index: i, Digest: got[pcrKey{s.Bank, i}]})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

type pcrKey struct {
	bank  evidence.Bank
	index int
}

// collectPCRs files the digests of one TPM2_PCR_Read response under their
// PCRs, removes them from pending, and returns how many it filed. The TPM
// lists digests in the order of its output selection: banks in order, PCRs
// in ascending order within a bank.
func collectPCRs(rsp *tpm2.PCRReadResponse, got map[pcrKey][]byte, pending map[evidence.Bank][]int) (int, error) {
	digests := rsp.PCRValues.Digests
	n := 0
	for _, s := range rsp.PCRSelectionOut.PCRSelections {
		bank, ok := evidence.BankForAlg(uint16(s.Hash))
		if !ok {
			return 0, fmt.Errorf("TPM returned PCRs of unrequested algorithm 0x%x", uint16(s.Hash))
		}
		for i := range len(s.PCRSelect) * 8 {
			if s.PCRSelect[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			if n >= len(digests) {
				return 0, fmt.Errorf("TPM returned %d digests for a larger selection", len(digests))
			}
			d := digests[n].Buffer
			n++
			if len(d) != bank.Size() {
				return 0, fmt.Errorf("PCR %d (%s): digest is %d bytes, want %d", i, bank, len(d), bank.Size())
			}
			k := pcrKey{bank, i}
			if j := slices.Index(pending[bank], i); j >= 0 {
				got[k] = slices.Clone(d)
				pending[bank] = slices.Delete(pending[bank], j, j+1)
				if len(pending[bank]) == 0 {
					delete(pending, bank)
				}
			}
		}
	}
	return n, nil
}

// Extend extends PCR pcr in every given bank with TPM2_PCR_Extend:
// PCR := H(PCR || digest). Each digest must have its bank's size.
func (t *TPM) Extend(pcr int, digests map[evidence.Bank][]byte) error {
	return t.locked(fmt.Sprintf("extend PCR %d", pcr), func(tr transport.TPM) error {
		if pcr < 0 || pcr >= evidence.NumPCRs {
			return fmt.Errorf("PCR index out of range [0, %d)", evidence.NumPCRs)
		}
		if len(digests) == 0 {
			return fmt.Errorf("no digests")
		}
		var values tpm2.TPMLDigestValues
		// Banks in a fixed order, so the command is the same for the same input.
		for _, b := range evidence.Banks {
			d, ok := digests[b]
			if !ok {
				continue
			}
			if len(d) != b.Size() {
				return fmt.Errorf("%s digest is %d bytes, want %d", b, len(d), b.Size())
			}
			values.Digests = append(values.Digests, tpm2.TPMTHA{HashAlg: tpm2.TPMIAlgHash(b.AlgID()), Digest: d})
		}
		if len(values.Digests) != len(digests) {
			return fmt.Errorf("unknown bank among %d digests", len(digests))
		}
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
			Digests:   values,
		}.Execute(tr)
		return err
	})
}

// Quote has the AK sign the selected PCRs and the nonce with TPM2_Quote.
// attest is the TPMS_ATTEST exactly as the TPM signed it and signature the
// marshalled TPMT_SIGNATURE (RSASSA, SHA-256). The TPM drops PCRs of
// unallocated banks from the quote without an error; the verifier must check
// that the signed selection covers what its policy needs.
func (t *TPM) Quote(nonce []byte, sel []evidence.Selection) (attest, signature []byte, err error) {
	err = t.locked("quote", func(tr transport.TPM) error {
		if err := validateSelections(sel); err != nil {
			return err
		}
		ak, err := t.loadAK(tr)
		if err != nil {
			return err
		}
		rsp, err := tpm2.Quote{
			SignHandle:     tpm2.NamedHandle{Handle: ak.handle, Name: ak.name},
			QualifyingData: tpm2.TPM2BData{Buffer: nonce},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      tpmSelection(sel),
		}.Execute(tr)
		if err != nil {
			return err
		}
		attest = rsp.Quoted.Bytes()
		signature = tpm2.Marshal(rsp.Signature)
		return nil
	})
	return attest, signature, err
}

// ErrPCRsChanging reports PCRs that changed between reading and quoting in
// two rounds running: something keeps extending them.
var ErrPCRsChanging = errors.New("the selected PCRs changed between reading them and quoting them, twice")

// QuoteWithPCRs quotes sel with nonce and returns, with the quote, the PCR
// values it signed. TPM2_Quote signs only a digest of the PCRs, so the values
// must be read separately; a PCR extended between the read and the quote (by
// the kernel, IMA, another process) would make the evidence inconsistent and
// the host look untrusted. So each round reads, quotes, and checks the
// quote's PCR digest against the values read; a round that does not match is
// retried once. The values returned are those whose digest the quote signed.
func (t *TPM) QuoteWithPCRs(nonce []byte, sel []evidence.Selection) (attest, signature []byte, pcrs []evidence.PCR, err error) {
	return t.quoteRound(nonce, sel, nil)
}

// quoteRound is QuoteWithPCRs; between, if set, runs after each round's
// read and before its quote (tests extend a PCR there).
func (t *TPM) quoteRound(nonce []byte, sel []evidence.Selection, between func(round int)) (attest, signature []byte, pcrs []evidence.PCR, err error) {
	for round := range 2 {
		if pcrs, err = t.ReadPCRs(sel); err != nil {
			return nil, nil, nil, err
		}
		if between != nil {
			between(round)
		}
		if attest, signature, err = t.Quote(nonce, sel); err != nil {
			return nil, nil, nil, err
		}
		ok, err := quoteCovers(attest, pcrs)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("quote: %w", err)
		}
		if ok {
			return attest, signature, pcrs, nil
		}
	}
	return nil, nil, nil, fmt.Errorf("quote: %w", ErrPCRsChanging)
}

// quoteCovers reports whether the PCR digest in a quote's TPMS_ATTEST is the
// digest of pcrs over the quote's selection, in the TPM's order (banks as
// selected, PCRs ascending), hashed with the AK's scheme hash (sha256).
func quoteCovers(attest []byte, pcrs []evidence.PCR) (bool, error) {
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](attest)
	if err != nil {
		return false, fmt.Errorf("decode TPMS_ATTEST: %w", err)
	}
	q, err := a.Attested.Quote()
	if err != nil {
		return false, fmt.Errorf("decode quote info: %w", err)
	}
	h := crypto.SHA256.New()
	for _, s := range q.PCRSelect.PCRSelections {
		bank, ok := evidence.BankForAlg(uint16(s.Hash))
		if !ok {
			return false, fmt.Errorf("quote selects PCRs of unknown algorithm 0x%x", uint16(s.Hash))
		}
		for i := range len(s.PCRSelect) * 8 {
			if s.PCRSelect[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			j := slices.IndexFunc(pcrs, func(p evidence.PCR) bool { return p.Bank == bank && p.Index == i })
			if j < 0 {
				return false, fmt.Errorf("quote covers PCR %d (%s), which was not read", i, bank)
			}
			h.Write(pcrs[j].Digest)
		}
	}
	return bytes.Equal(h.Sum(nil), q.PCRDigest.Buffer), nil
}

// validateSelections checks each selection and that no bank repeats.
func validateSelections(sel []evidence.Selection) error {
	if len(sel) == 0 {
		return fmt.Errorf("empty PCR selection")
	}
	seen := make(map[evidence.Bank]bool, len(sel))
	for _, s := range sel {
		if err := s.Validate(); err != nil {
			return err
		}
		if seen[s.Bank] {
			return fmt.Errorf("bank %s selected twice", s.Bank)
		}
		seen[s.Bank] = true
	}
	return nil
}

// tpmSelection converts validated selections to a TPML_PCR_SELECTION.
func tpmSelection(sel []evidence.Selection) tpm2.TPMLPCRSelection {
	var out tpm2.TPMLPCRSelection
	for _, s := range sel {
		bits := make([]byte, pcrSelectSize)
		for _, i := range s.PCRs {
			bits[i/8] |= 1 << (i % 8)
		}
		out.PCRSelections = append(out.PCRSelections, tpm2.TPMSPCRSelection{
			Hash:      tpm2.TPMIAlgHash(s.Bank.AlgID()),
			PCRSelect: bits,
		})
	}
	return out
}
