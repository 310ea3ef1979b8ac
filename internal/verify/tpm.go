package verify

import (
	"encoding/binary"
	"errors"
	"fmt"

	"trustpool/internal/evidence"
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

// errShort reports a structure that runs past the end of its buffer.
var errShort = errors.New("truncated")

// reader decodes the TPM's big-endian wire format with bounds checks. The
// first short read sets err and later reads return zero values, so callers
// check err once after a group of reads. Returned slices alias the input.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) len() int { return len(r.b) - r.off }

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > r.len() {
		r.err = errShort
		return nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

func (r *reader) u8() uint8 {
	if v := r.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.bytes(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.bytes(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.bytes(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// tpm2b reads a TPM2B: a 16-bit size, then that many bytes, at most max.
func (r *reader) tpm2b(max int) []byte {
	n := int(r.u16())
	if r.err == nil && n > max {
		r.err = fmt.Errorf("%d-byte field, limit %d", n, max)
		return nil
	}
	return r.bytes(n)
}

// end reports an error if decoding failed or left bytes over.
func (r *reader) end() error {
	if r.err != nil {
		return r.err
	}
	if r.len() != 0 {
		return fmt.Errorf("%d trailing bytes", r.len())
	}
	return nil
}

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
func decodeAttestHeader(r *reader, a *attest) error {
	a.magic = r.u32()
	a.typ = r.u16()
	a.qualifiedSigner = r.tpm2b(2 + 64) // TPM2B_NAME: alg + digest
	a.extraData = r.tpm2b(64)           // TPM2B_DATA: sizeof(TPMT_HA)
	a.clock = r.u64()
	a.resetCount = r.u32()
	a.restartCount = r.u32()
	safe := r.u8()
	a.firmwareVersion = r.u64()
	if r.err != nil {
		return fmt.Errorf("TPMS_ATTEST header: %w", r.err)
	}
	if safe > 1 {
		return fmt.Errorf("TPMS_CLOCK_INFO.safe is %d, want 0 or 1", safe)
	}
	a.safe = safe == 1
	return nil
}

// decodeQuoteInfo decodes a TPMS_QUOTE_INFO and requires it to end the
// buffer. A bank trustpool does not know may appear only with no PCR selected.
func decodeQuoteInfo(r *reader, a *attest) error {
	n := r.u32()
	if r.err != nil {
		return fmt.Errorf("TPMS_QUOTE_INFO: %w", r.err)
	}
	if n > maxSelections {
		return fmt.Errorf("TPML_PCR_SELECTION has %d entries, limit %d", n, maxSelections)
	}
	var seen [maxSelections]uint16
	for i := range n {
		alg := r.u16()
		size := int(r.u8())
		if r.err == nil && size > maxSelectBytes {
			return fmt.Errorf("PCR selection of %d bytes, limit %d", size, maxSelectBytes)
		}
		bits := r.bytes(size)
		if r.err != nil {
			return fmt.Errorf("TPML_PCR_SELECTION: %w", r.err)
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
	a.pcrDigest = r.tpm2b(64)
	if err := r.end(); err != nil {
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
	r := reader{b: b}
	s := signature{alg: r.u16(), hash: r.u16()}
	if r.err != nil {
		return s, fmt.Errorf("TPMT_SIGNATURE: %w", r.err)
	}
	switch s.alg {
	case algRSASSA, algRSAPSS:
		s.sig = r.tpm2b(maxRSABits / 8)
	case algECDSA:
		s.r = r.tpm2b(maxECCBytes)
		s.s = r.tpm2b(maxECCBytes)
	default:
		return s, fmt.Errorf("TPMT_SIGNATURE: unsupported scheme 0x%04x", s.alg)
	}
	if err := r.end(); err != nil {
		return s, fmt.Errorf("TPMT_SIGNATURE: %w", err)
	}
	return s, nil
}
