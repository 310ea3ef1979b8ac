package verify_test

import (
	"bytes"
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
