package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"trustpool/internal/eventlog"
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
// MeasuredPCRs can stop reading after them. It writes what encoding/json
// writes for Measurements, byte for byte (a test compares the two), without
// reflection: every verified attestation is encoded, to be compared with
// what is stored.
func MarshalMeasurements(m *Measurements) ([]byte, error) {
	b := make([]byte, 0, measurementsSize(m))
	b = append(b, `{"pcrs":`...)
	b = appendPCRs(b, m.PCRs)
	b = append(b, `,"events":`...)
	b = appendEvents(b, m.Events)
	b = append(b, `,"drtm_events":`...)
	b = appendEvents(b, m.DRTMEvents)
	if len(m.Unproven) > 0 {
		r, err := json.Marshal(m.Unproven)
		if err != nil {
			return nil, fmt.Errorf("encode measurements: %w", err)
		}
		b = append(append(b, `,"unproven":`...), r...)
	}
	return append(b, '}'), nil
}

// measurementsSize is about the encoded size of m: its bytes in base64,
// and some for the names and numbers around them.
func measurementsSize(m *Measurements) int {
	n := 64
	for _, pcrs := range m.PCRs {
		for _, v := range pcrs {
			n += base64.StdEncoding.EncodedLen(len(v)) + 8
		}
	}
	for _, events := range [][]eventlog.Event{m.Events, m.DRTMEvents} {
		for _, e := range events {
			n += base64.StdEncoding.EncodedLen(len(e.Data)) + 56
			for _, d := range e.Digests {
				n += base64.StdEncoding.EncodedLen(len(d.Value)) + 30
			}
		}
	}
	return n + 256*len(m.Unproven)
}

// appendPCRs encodes pcrs as encoding/json does a map: keys sorted as
// strings (so PCR 10 before PCR 2).
func appendPCRs(b []byte, pcrs map[evidence.Bank]map[int][]byte) []byte {
	if pcrs == nil {
		return append(b, "null"...)
	}
	b = append(b, '{')
	for i, bank := range slices.Sorted(maps.Keys(pcrs)) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendString(b, string(bank)), ':')
		values := pcrs[bank]
		if values == nil {
			b = append(b, "null"...)
			continue
		}
		type member struct {
			name  string
			value []byte
		}
		members := make([]member, 0, len(values))
		for pcr, v := range values {
			members = append(members, member{strconv.Itoa(pcr), v})
		}
		slices.SortFunc(members, func(x, y member) int { return strings.Compare(x.name, y.name) })
		b = append(b, '{')
		for j, m := range members {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(append(append(b, '"'), m.name...), `":`...)
			b = appendBytes(b, m.value)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

func appendEvents(b []byte, events []eventlog.Event) []byte {
	if events == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, e := range events {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(e.Index), 10)
		b = append(b, `,"pcr":`...)
		b = strconv.AppendInt(b, int64(e.PCR), 10)
		b = append(b, `,"type":`...)
		b = strconv.AppendUint(b, uint64(e.Type), 10)
		b = append(b, `,"digests":`...)
		if e.Digests == nil {
			b = append(b, "null"...)
		} else {
			b = append(b, '[')
			for j, d := range e.Digests {
				if j > 0 {
					b = append(b, ',')
				}
				b = append(b, `{"bank":`...)
				b = appendString(b, string(d.Bank))
				b = append(b, `,"value":`...)
				b = append(appendBytes(b, d.Value), '}')
			}
			b = append(b, ']')
		}
		b = append(b, `,"data":`...)
		b = append(appendBytes(b, e.Data), '}')
	}
	return append(b, ']')
}

// appendBytes encodes v as encoding/json does a []byte: base64, or null.
func appendBytes(b, v []byte) []byte {
	if v == nil {
		return append(b, "null"...)
	}
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// appendString encodes s as encoding/json does: a bank's name is plain
// ASCII, and anything else is left to encoding/json's escaping.
func appendString(b []byte, s string) []byte {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	return append(append(append(b, '"'), s...), '"')
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
