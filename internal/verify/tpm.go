package verify

import (
	"fmt"

	"trustpool/internal/evidence"
	"trustpool/internal/wire"
)

// TPM 2.0 constants (TPM 2.0 Library, Part 2: Structures).
const (
	algRSA       uint16 = 0x0001
	algSHA1      uint16 = 0x0004
	algSHA256    uint16 = 0x000B
	algSHA384    uint16 = 0x000C
	algNull      uint16 = 0x0010
	algRSASSA    uint16 = 0x0014
	algRSAPSS    uint16 = 0x0016
	algECDSA     uint16 = 0x0018
	algECC       uint16 = 0x0023
	eccNISTP256  uint16 = 0x0003
	eccNISTP384  uint16 = 0x0004
	generated    uint32 = 0xff544347 // TPM_GENERATED_VALUE: the TPM made this structure
	stAttestQuot uint16 = 0x8018     // TPM_ST_ATTEST_QUOTE
	rhOwner      uint32 = 0x40000001 // TPM_RH_OWNER: the owner (storage) hierarchy

	// maxSelections bounds TPML_PCR_SELECTION (the TPM's HASH_COUNT is small).
	maxSelections = 8
	// maxSelectBytes bounds TPMS_PCR_SELECTION.sizeofSelect; PC Client TPMs
	// have 24 PCRs (3 bytes).
	maxSelectBytes = 8
)

// TPMA_OBJECT bits an AK's attributes are checked against.
const (
	attrFixedTPM            uint32 = 1 << 1
	attrFixedParent         uint32 = 1 << 4
	attrSensitiveDataOrigin uint32 = 1 << 5
	attrRestricted          uint32 = 1 << 16
	attrDecrypt             uint32 = 1 << 17
	attrSign                uint32 = 1 << 18
)

// attest is a decoded TPMS_ATTEST of a quote. Its byte fields alias the
// decoded buffer.
type attest struct {
	magic           uint32
	typ             uint16
	qualifiedSigner []byte
	extraData       []byte
	clock           uint64
	resetCount      uint32
	restartCount    uint32
	safe            bool
	firmwareVersion uint64
	// selection is the quote's TPML_PCR_SELECTION without empty entries, in
	// the quote's order; masks[i] holds selection[i]'s PCRs as a bit set.
	selection []evidence.Selection
	masks     []uint32
	pcrDigest []byte
}

// decodeAttestHeader decodes the fields common to every TPMS_ATTEST, up to
// and including firmwareVersion, leaving r at the type-specific part.
func decodeAttestHeader(r *wire.Reader, a *attest) error {
	a.magic = r.U32()
	a.typ = r.U16()
	a.qualifiedSigner = r.Sized16(2 + 64) // TPM2B_NAME: alg + digest
	a.extraData = r.Sized16(64)           // TPM2B_DATA: sizeof(TPMT_HA)
	a.clock = r.U64()
	a.resetCount = r.U32()
	a.restartCount = r.U32()
	safe := r.U8()
	a.firmwareVersion = r.U64()
	if r.Err() != nil {
		return fmt.Errorf("TPMS_ATTEST header: %w", r.Err())
	}
	if safe > 1 {
		return fmt.Errorf("TPMS_CLOCK_INFO.safe is %d, want 0 or 1", safe)
	}
	a.safe = safe == 1
	return nil
}

// decodeQuoteInfo decodes a TPMS_QUOTE_INFO and requires it to end the
// buffer. A bank trustpool does not know may appear only with no PCR selected.
func decodeQuoteInfo(r *wire.Reader, a *attest) error {
	n := r.U32()
	if r.Err() != nil {
		return fmt.Errorf("TPMS_QUOTE_INFO: %w", r.Err())
	}
	if n > maxSelections {
		return fmt.Errorf("TPML_PCR_SELECTION has %d entries, limit %d", n, maxSelections)
	}
	var seen [maxSelections]uint16
	for i := range n {
		alg := r.U16()
		size := int(r.U8())
		if r.Err() == nil && size > maxSelectBytes {
			return fmt.Errorf("PCR selection of %d bytes, limit %d", size, maxSelectBytes)
		}
		bits := r.Bytes(size)
		if r.Err() != nil {
			return fmt.Errorf("TPML_PCR_SELECTION: %w", r.Err())
		}
		for _, s := range seen[:i] {
			if s == alg {
				return fmt.Errorf("bank 0x%04x selected twice", alg)
			}
		}
		seen[i] = alg
		var mask uint32
		for j, c := range bits {
			if j >= 3 {
				if c != 0 {
					return fmt.Errorf("selection of bank 0x%04x names PCRs beyond %d", alg, evidence.NumPCRs-1)
				}
				continue
			}
			mask |= uint32(c) << (8 * j)
		}
		if mask == 0 {
			continue
		}
		bank, ok := evidence.BankForAlg(alg)
		if !ok {
			return fmt.Errorf("quote selects PCRs of bank 0x%04x, which trustpool cannot verify", alg)
		}
		pcrs := make([]int, 0, 24)
		for p := range evidence.NumPCRs {
			if mask&(1<<p) != 0 {
				pcrs = append(pcrs, p)
			}
		}
		a.selection = append(a.selection, evidence.Selection{Bank: bank, PCRs: pcrs})
		a.masks = append(a.masks, mask)
	}
	a.pcrDigest = r.Sized16(64)
	if err := r.End(); err != nil {
		return fmt.Errorf("TPMS_QUOTE_INFO: %w", err)
	}
	return nil
}

// signature is a decoded TPMT_SIGNATURE. For RSA sig holds the signature;
// for ECDSA r and s hold the big-endian scalars.
type signature struct {
	alg  uint16
	hash uint16
	sig  []byte
	r, s []byte
}

// decodeSignature decodes a TPMT_SIGNATURE of scheme RSASSA, RSAPSS or
// ECDSA, with no trailing bytes.
func decodeSignature(b []byte) (signature, error) {
	r := wire.BigEndian(b)
	s := signature{alg: r.U16(), hash: r.U16()}
	if r.Err() != nil {
		return s, fmt.Errorf("TPMT_SIGNATURE: %w", r.Err())
	}
	switch s.alg {
	case algRSASSA, algRSAPSS:
		s.sig = r.Sized16(maxRSABits / 8)
	case algECDSA:
		s.r = r.Sized16(maxECCBytes)
		s.s = r.Sized16(maxECCBytes)
	default:
		return s, fmt.Errorf("TPMT_SIGNATURE: unsupported scheme 0x%04x", s.alg)
	}
	if err := r.End(); err != nil {
		return s, fmt.Errorf("TPMT_SIGNATURE: %w", err)
	}
	return s, nil
}
