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

// Replayed is a log replayed in one bank.
type Replayed struct {
	// Values are the PCR values the log's digests extend to.
	Values [evidence.NumPCRs][]byte
	// Extended[i] says whether any event touched PCR i.
	Extended [evidence.NumPCRs]bool
	// Gap[i] is the index of the first event on PCR i that carries no
	// digest in the bank, or -1. Where Gap[i] >= 0, Values[i] is not what
	// the TPM holds: the log cannot say what the event extended, so PCR i
	// cannot be replayed in this bank.
	Gap [evidence.NumPCRs]int
}

// Replay computes PCR values from the log in bank b. It is ReplayBank for
// callers that need every PCR: an event without a digest in b is an error.
func (l *Log) Replay(b evidence.Bank, drtm bool) (values [evidence.NumPCRs][]byte, extended [evidence.NumPCRs]bool, err error) {
	r, err := l.ReplayBank(b, drtm)
	if err != nil {
		return r.Values, r.Extended, err
	}
	first := -1
	for _, g := range r.Gap {
		if g >= 0 && (first < 0 || g < first) {
			first = g
		}
	}
	if first >= 0 {
		return r.Values, r.Extended, fmt.Errorf("replay event log in %s: event %d carries no %s digest", b, first, b)
	}
	return r.Values, r.Extended, nil
}

// ReplayBank computes PCR values from the log in bank b. PCRs 0-16 and 23
// start at zero (PCR 0 honours the EV_NO_ACTION StartupLocality event); PCRs
// 17-22 start all-ones unless drtm is true (a log of a dynamic launch, where
// they start at zero). EV_NO_ACTION events are not extended, whatever PCR
// they name; any other event must name a PCR below evidence.NumPCRs. An
// event that carries no digest in b leaves a gap on its PCR (Replayed.Gap)
// and is not extended. The values are computed from the log's digests
// alone; whether they mean anything depends on a quote.
func (l *Log) ReplayBank(b evidence.Bank, drtm bool) (Replayed, error) {
	var r Replayed
	for i := range r.Gap {
		r.Gap[i] = -1
	}
	slot := -1
	for i, lb := range l.Banks {
		if lb == b {
			slot = i
			break
		}
	}
	if slot < 0 {
		return r, fmt.Errorf("replay event log in %s: the log has no %s digests", b, b)
	}
	extend := extender(b)
	size := b.Size()
	if extend == nil || size == 0 {
		return r, fmt.Errorf("replay event log: unknown bank %q", b)
	}

	// One allocation for all 24 values; each value is capped so that no
	// caller's append can spill into its neighbour.
	all := make([]byte, evidence.NumPCRs*size)
	for i := range r.Values {
		r.Values[i] = all[i*size : (i+1)*size : (i+1)*size]
	}
	if !drtm {
		for i := firstDRTMPCR; i <= lastDRTMPCR; i++ {
			for j := range r.Values[i] {
				r.Values[i][j] = 0xff
			}
		}
	}

	for _, e := range l.Events {
		if e.Type == EvNoAction {
			if e.PCR == 0 && len(e.Data) == len(startupLocality)+1 && bytes.HasPrefix(e.Data, startupLocality) {
				if r.Extended[0] {
					return r, fmt.Errorf("replay event log: event %d: StartupLocality after PCR 0 was extended", e.Index)
				}
				loc := e.Data[len(startupLocality)]
				if loc != 0 && loc != 3 && loc != 4 {
					return r, fmt.Errorf("replay event log: event %d: StartupLocality %d, want 0, 3 or 4", e.Index, loc)
				}
				clear(r.Values[0])
				r.Values[0][size-1] = loc
			}
			continue
		}
		if e.PCR < 0 || e.PCR >= evidence.NumPCRs {
			return r, fmt.Errorf("replay event log: event %d: PCR index %d out of range for %s", e.Index, e.PCR, TypeName(e.Type))
		}
		r.Extended[e.PCR] = true
		// Parse puts bank i's digest at Digests[i] when the event has all
		// of them; a hand-made Log or a partial event may not.
		var d []byte
		if slot < len(e.Digests) && e.Digests[slot].Bank == b {
			d = e.Digests[slot].Value
		} else {
			d = e.Digest(b)
		}
		if d == nil {
			if r.Gap[e.PCR] < 0 {
				r.Gap[e.PCR] = e.Index
			}
			continue
		}
		if len(d) != size {
			return r, fmt.Errorf("replay event log: event %d: %s digest is %d bytes, want %d", e.Index, b, len(d), size)
		}
		extend(r.Values[e.PCR], d)
	}
	return r, nil
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
