package enroll

import (
	"crypto/rand"
	"encoding/json"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"trustpool/internal/evidence"
	"trustpool/internal/problem"
	"trustpool/internal/verify/verifytest"
)

// FuzzEnrollRequest feeds arbitrary JSON to the enrollment request decoder
// and key checks an agent reaches before anything is stored: they must
// refuse with a client problem, or hand keys to credential making, which may
// still refuse (Begin reports that as invalid) but never panics.
func FuzzEnrollRequest(f *testing.F) {
	ak, err := verifytest.NewSoftAK(verifytest.RSA2048)
	if err != nil {
		f.Fatal(err)
	}
	tmpl := tpm2.RSAEKTemplate
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)})
	ek := tpm2.Marshal(tmpl)
	seed, _ := json.Marshal(evidence.EnrollRequest{Host: "node1", EKPublic: ek, AKPublic: ak.Public(), URL: "https://127.0.0.1:9443", CSR: []byte{0x30}})
	f.Add(seed)
	f.Add([]byte(`{"host":"n","ek_public":"AAE=","ak_public":"AAE=","url":"https://h:1","csr":"MA=="}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var req evidence.EnrollRequest
		if json.Unmarshal(b, &req) != nil {
			return
		}
		ak, kem, err := parseKeys(&req)
		if err != nil {
			if problem.KindOf(err) != problem.Invalid {
				t.Fatalf("refusal is not a client problem: %v", err)
			}
			return
		}
		tpm2.CreateCredential(rand.Reader, kem, ak.Name(), make([]byte, 32))
	})
}
