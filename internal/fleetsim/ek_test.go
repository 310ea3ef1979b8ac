package fleetsim

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// TestActivateCredential checks the software activation against go-tpm's
// tpm2.CreateCredential, which the server's enrollment uses, and that it
// refuses a credential made for another name or another EK.
func TestActivateCredential(t *testing.T) {
	ek, err := NewSoftEK()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.Public())
	if err != nil {
		t.Fatalf("EK public area does not decode: %v", err)
	}
	if a := pub.ObjectAttributes; !a.FixedTPM || !a.FixedParent || !a.Restricted || !a.Decrypt || a.SignEncrypt || !a.AdminWithPolicy || a.UserWithAuth {
		t.Fatalf("EK attributes %+v are not the default EK template's", a)
	}
	if got := tpm2.Marshal(tpm2.RSAEKTemplate.AuthPolicy); !bytes.Equal(got, tpm2b(nil, ekPolicy)) {
		t.Fatalf("EK auth policy differs from tpm2.RSAEKTemplate")
	}
	kem, err := tpm2.ImportEncapsulationKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := NewSoftAK(P256)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewSoftAK(P256)
	if err != nil {
		t.Fatal(err)
	}
	otherEK, err := NewSoftEK()
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{16, 32, 48} {
		secret := make([]byte, size)
		rand.Read(secret)
		blob, enc, err := tpm2.CreateCredential(rand.Reader, kem, ak.Name(), secret)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ek.ActivateCredential(ak.Name(), blob, enc)
		if err != nil {
			t.Fatalf("%d-byte secret: %v", size, err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatalf("%d-byte secret: activation recovered %x, want %x", size, got, secret)
		}
		if _, err := ek.ActivateCredential(other.Name(), blob, enc); err == nil {
			t.Errorf("%d-byte secret: activation for another AK's name succeeded", size)
		}
		if _, err := otherEK.ActivateCredential(ak.Name(), blob, enc); err == nil {
			t.Errorf("%d-byte secret: activation with another EK succeeded", size)
		}
		blob[len(blob)-1] ^= 1
		if _, err := ek.ActivateCredential(ak.Name(), blob, enc); err == nil {
			t.Errorf("%d-byte secret: activation of a changed blob succeeded", size)
		}
	}
}

// TestKDFa checks KDFa against go-tpm's, whole and partial bytes.
func TestKDFa(t *testing.T) {
	key := []byte("seed of the credential")
	for _, bits := range []int{128, 256, 300, 1024} {
		want := tpm2.KDFa(cryptoSHA256, key, labelStorage, []byte("context U"), []byte("V"), bits)
		if got := KDFa(key, labelStorage, []byte("context U"), []byte("V"), bits); !bytes.Equal(got, want) {
			t.Errorf("KDFa %d bits: %x, want %x", bits, got, want)
		}
	}
}

const cryptoSHA256 = crypto.SHA256
