package verify

import (
	"bytes"
	"encoding/json"
	"fmt"

	"trustpool/internal/evidence"
)

// The stored form of Measurements is this package's: the server writes what
// verification proved once (MarshalMeasurements) and reads it back for
// re-evaluation, golden-host import and the API (UnmarshalMeasurements,
// MeasuredPCRs). The document is a JSON object whose first member is "pcrs";
// testdata/measurements.golden.json pins it. Stored measurements were proven
// by an earlier verification, but they are read from the database, so the
// readers still reject anything that is not that document.

// MarshalMeasurements encodes m in the stored form, PCR values first so that
// MeasuredPCRs can stop reading after them.
func MarshalMeasurements(m *Measurements) ([]byte, error) {
	// encoding/json writes struct fields in declaration order, and PCRs is
	// Measurements' first field; the golden-file test holds it so.
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode measurements: %w", err)
	}
	return b, nil
}

// UnmarshalMeasurements decodes measurements stored by MarshalMeasurements.
func UnmarshalMeasurements(b []byte) (Measurements, error) {
	var m Measurements
	if err := json.Unmarshal(b, &m); err != nil {
		return Measurements{}, fmt.Errorf("decode measurements: %w", err)
	}
	return m, nil
}

// MeasuredPCRs reads only the PCR values of stored measurements. Most
// verdicts are decided by PCR values alone, and decoding fifty events per
// host would dominate re-evaluating a fleet, so it stops after the leading
// "pcrs" member; a document laid out otherwise (not one MarshalMeasurements
// wrote) is decoded in full, more slowly, with the same answer.
func MeasuredPCRs(b []byte) (map[evidence.Bank]map[int][]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err == nil && t == json.Delim('{') {
		if t, err := dec.Token(); err == nil && t == "pcrs" {
			var pcrs map[evidence.Bank]map[int][]byte
			if err := dec.Decode(&pcrs); err != nil {
				return nil, fmt.Errorf("decode measured PCRs: %w", err)
			}
			return pcrs, nil
		}
	}
	var only struct {
		PCRs map[evidence.Bank]map[int][]byte `json:"pcrs"`
	}
	if err := json.Unmarshal(b, &only); err != nil {
		return nil, fmt.Errorf("decode measured PCRs: %w", err)
	}
	return only.PCRs, nil
}
