package integrity

import (
	"encoding/json"
	"testing"

	"trustpool/internal/verify/verifytest"
)

// FuzzDecodeEvidence feeds arbitrary bytes to the decoder of an agent's
// answer: it must refuse or return evidence within every limit.
func FuzzDecodeEvidence(f *testing.F) {
	n, err := verifytest.NewNode(verifytest.RSA2048, "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	ev, err := n.Evidence(make([]byte, 32))
	if err != nil {
		f.Fatal(err)
	}
	seed, _ := json.Marshal(ev)
	f.Add(seed)
	f.Add([]byte(`{"quote":"","signature":"","pcrs":[]}`))
	f.Add([]byte(`{"quote":"AA==","signature":"AA==","pcrs":[{"bank":"sha256","index":0,"digest":"AA=="}]} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeEvidence(b)
		if err != nil {
			return
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("decoded evidence fails validation: %v", err)
		}
	})
}
