package eventlog

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"

	"trustpool/internal/evidence"
)

// startupLocality is the data of the EV_NO_ACTION event by which firmware
// records the locality TPM2_Startup ran at (PC Client PFP section 10.4.5.3):
// the signature followed by one byte, the locality.
var startupLocality = []byte("StartupLocality\x00")

// DRTM PCRs: reset to all-ones at TPM start, to zero by a dynamic launch.
const (
	firstDRTMPCR = 17
	lastDRTMPCR  = 22
)

// Replay computes PCR values from the log in bank b. PCRs 0-16 and 23 start
// at zero (PCR 0 honours the EV_NO_ACTION StartupLocality event); PCRs 17-22
// start all-ones unless drtm is true (a log of a dynamic launch, where they
// start at zero). extended[i] says whether any event touched PCR i.
// EV_NO_ACTION events are not extended. The values are computed from the
// log's digests alone; whether they mean anything depends on a quote.
func (l *Log) Replay(b evidence.Bank, drtm bool) (values [evidence.NumPCRs][]byte, extended [evidence.NumPCRs]bool, err error) {
	slot := -1
	for i, lb := range l.Banks {
		if lb == b {
			slot = i
			break
		}
	}
	if slot < 0 {
		return values, extended, fmt.Errorf("replay event log in %s: the log has no %s digests", b, b)
	}
	extend := extender(b)
	size := b.Size()
	if extend == nil || size == 0 {
		return values, extended, fmt.Errorf("replay event log: unknown bank %q", b)
	}

	// One allocation for all 24 values; each value is capped so that no
	// caller's append can spill into its neighbour.
	all := make([]byte, evidence.NumPCRs*size)
	for i := range values {
		values[i] = all[i*size : (i+1)*size : (i+1)*size]
	}
	if !drtm {
		for i := firstDRTMPCR; i <= lastDRTMPCR; i++ {
			for j := range values[i] {
				values[i][j] = 0xff
			}
		}
	}

	for _, e := range l.Events {
		if e.PCR < 0 || e.PCR >= evidence.NumPCRs {
			return values, extended, fmt.Errorf("replay event log: event %d: PCR index %d out of range", e.Index, e.PCR)
		}
		if e.Type == EvNoAction {
			if e.PCR == 0 && len(e.Data) == len(startupLocality)+1 && bytes.HasPrefix(e.Data, startupLocality) {
				if extended[0] {
					return values, extended, fmt.Errorf("replay event log: event %d: StartupLocality after PCR 0 was extended", e.Index)
				}
				loc := e.Data[len(startupLocality)]
				if loc != 0 && loc != 3 && loc != 4 {
					return values, extended, fmt.Errorf("replay event log: event %d: StartupLocality %d, want 0, 3 or 4", e.Index, loc)
				}
				clear(values[0])
				values[0][size-1] = loc
			}
			continue
		}
		// Parse puts bank i's digest at Digests[i]; a hand-made Log may not.
		var d []byte
		if slot < len(e.Digests) && e.Digests[slot].Bank == b {
			d = e.Digests[slot].Value
		} else {
			d = e.Digest(b)
		}
		if len(d) != size {
			return values, extended, fmt.Errorf("replay event log: event %d: %s digest is %d bytes, want %d", e.Index, b, len(d), size)
		}
		extend(values[e.PCR], d)
		extended[e.PCR] = true
	}
	return values, extended, nil
}

// extender returns the function that sets pcr = H(pcr || digest) in bank b.
// Each works on a stack buffer with the fixed-size Sum functions, which do
// not allocate.
func extender(b evidence.Bank) func(pcr, digest []byte) {
	switch b {
	case evidence.SHA1:
		return func(pcr, digest []byte) {
			var buf [2 * sha1.Size]byte
			copy(buf[:sha1.Size], pcr)
			copy(buf[sha1.Size:], digest)
			s := sha1.Sum(buf[:])
			copy(pcr, s[:])
		}
	case evidence.SHA256:
		return func(pcr, digest []byte) {
			var buf [2 * sha256.Size]byte
			copy(buf[:sha256.Size], pcr)
			copy(buf[sha256.Size:], digest)
			s := sha256.Sum256(buf[:])
			copy(pcr, s[:])
		}
	case evidence.SHA384:
		return func(pcr, digest []byte) {
			var buf [2 * sha512.Size384]byte
			copy(buf[:sha512.Size384], pcr)
			copy(buf[sha512.Size384:], digest)
			s := sha512.Sum384(buf[:])
			copy(pcr, s[:])
		}
	}
	return nil
}

// Extend returns H(pcr || digest) in bank b: the value a TPM's PCR holds after
// TPM2_PCR_Extend. It returns nil for an unknown bank or wrong-sized inputs.
func Extend(b evidence.Bank, pcr, digest []byte) []byte {
	ext := extender(b)
	if ext == nil || len(pcr) != b.Size() || len(digest) != b.Size() {
		return nil
	}
	out := bytes.Clone(pcr)
	ext(out, digest)
	return out
}
