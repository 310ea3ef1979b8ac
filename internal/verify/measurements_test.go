package verify_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// goldenMeasurements has every member of the stored form filled in.
func goldenMeasurements() *verify.Measurements {
	d := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	return &verify.Measurements{
		PCRs: map[evidence.Bank]map[int][]byte{
			evidence.SHA1:   {0: d(20, 0x01)},
			evidence.SHA256: {0: d(32, 0x02), 17: d(32, 0xff), 18: d(32, 0x03)},
		},
		Events: []eventlog.Event{{Index: 0, PCR: 0, Type: 8, Data: []byte("S-CRTM"),
			Digests: []eventlog.Digest{{Bank: evidence.SHA1, Value: d(20, 0x11)}, {Bank: evidence.SHA256, Value: d(32, 0x12)}}}},
		DRTMEvents: []eventlog.Event{{Index: 3, PCR: 18, Type: 0x403, Data: []byte("tboot"),
			Digests: []eventlog.Digest{{Bank: evidence.SHA256, Value: d(32, 0x13)}}}},
		Unproven: []verdict.Reason{verdict.PCRReason(verdict.CodeUnproven, 7, "sha256", "the SHA-1 format log says nothing about sha256")},
	}
}

// The stored measurements are a format that outlives a server version: the
// golden file pins it, and every reader reads it.
func TestMeasurementsGolden(t *testing.T) {
	m := goldenMeasurements()
	got, err := verify.MarshalMeasurements(m)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "measurements.golden.json")
	if *update {
		if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want = bytes.TrimSuffix(want, []byte("\n"))
	if !bytes.Equal(got, want) {
		t.Fatalf("stored form changed (go test -run TestMeasurementsGolden -update if on purpose):\n got %s\nwant %s", got, want)
	}
	if !bytes.HasPrefix(got, []byte(`{"pcrs":`)) {
		t.Fatalf("the stored form must lead with the PCR values: %.40s", got)
	}
	back, err := verify.UnmarshalMeasurements(want)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, m) {
		t.Fatalf("round trip: %+v, want %+v", back, m)
	}
	pcrs, err := verify.MeasuredPCRs(want)
	if err != nil || !reflect.DeepEqual(pcrs, m.PCRs) {
		t.Fatalf("MeasuredPCRs: %v %v, want %v", pcrs, err, m.PCRs)
	}
}

func TestMeasuredPCRs(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      map[evidence.Bank]map[int][]byte
		err       bool
	}{
		{"pcrs not first", `{"events":[],"pcrs":{"sha256":{"0":"` + strings.Repeat("Ag", 1) + `=="}}}`,
			map[evidence.Bank]map[int][]byte{evidence.SHA256: {0: {0x02}}}, false},
		{"no pcrs", `{"events":[]}`, nil, false},
		{"not an object", `[1]`, nil, true},
		{"truncated", `{"pcrs":{"sha256":`, nil, true},
		{"garbage", `}`, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := verify.MeasuredPCRs([]byte(tc.doc))
			if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("MeasuredPCRs(%s) = %v, %v; want %v, error %v", tc.doc, got, err, tc.want, tc.err)
			}
		})
	}
	if _, err := verify.UnmarshalMeasurements([]byte(`{"pcrs":`)); err == nil {
		t.Fatal("UnmarshalMeasurements accepted a truncated document")
	}
}

// measurementsFrom builds measurements of every shape (nil and empty
// members, unusual bank names, PCR keys that sort apart as strings) from
// the bytes of r.
func measurementsFrom(r *bytes.Reader) *verify.Measurements {
	next := func(n int) int {
		c, err := r.ReadByte()
		if err != nil || n == 0 {
			return 0
		}
		return int(c) % n
	}
	banks := []evidence.Bank{evidence.SHA1, evidence.SHA256, evidence.SHA384, "", `"<&>\`, "a&b", "ba\x01nk", "bänk", "\xff"}
	value := func() []byte {
		switch n := next(40); n {
		case 0:
			return nil
		default:
			return bytes.Repeat([]byte{byte(next(256))}, n-1)
		}
	}
	events := func() []eventlog.Event {
		n := next(5)
		if n == 0 {
			return nil
		}
		es := make([]eventlog.Event, n-1)
		for i := range es {
			es[i] = eventlog.Event{Index: next(256) - 8, PCR: next(256)<<next(24) - 1, Type: uint32(next(256)) << next(32), Data: value()}
			if d := next(4); d > 0 {
				es[i].Digests = make([]eventlog.Digest, d-1)
				for j := range es[i].Digests {
					es[i].Digests[j] = eventlog.Digest{Bank: banks[next(len(banks))], Value: value()}
				}
			}
		}
		return es
	}
	m := &verify.Measurements{}
	if n := next(4); n > 0 {
		m.PCRs = map[evidence.Bank]map[int][]byte{}
		for range n - 1 {
			bank := banks[next(len(banks))]
			if next(5) == 0 {
				m.PCRs[bank] = nil
				continue
			}
			values := map[int][]byte{}
			for range next(30) {
				values[next(256)-2] = value()
			}
			m.PCRs[bank] = values
		}
	}
	m.Events, m.DRTMEvents = events(), events()
	if next(3) == 0 {
		m.Unproven = []verdict.Reason{verdict.PCRReason(verdict.CodeUnproven, next(24), "sha256", "no <sha256> & more")}
	}
	return m
}

// MarshalMeasurements writes what encoding/json writes, byte for byte.
func FuzzMarshalMeasurements(f *testing.F) {
	for i := range 200 {
		seed := make([]byte, 400)
		for j := range seed {
			seed[j] = byte(i*131 + j*j*7 + j/3)
		}
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := measurementsFrom(bytes.NewReader(b))
		got, err := verify.MarshalMeasurements(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("MarshalMeasurements differs from encoding/json:\n got %s\nwant %s", got, want)
		}
	})
}
