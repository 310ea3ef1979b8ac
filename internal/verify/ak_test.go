package verify_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"math/big"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

const (
	algRSASSA = 0x0014
	algRSAPSS = 0x0016
	algECDSA  = 0x0018
	algNull   = 0x0010
)

func TestParseAKAccepts(t *testing.T) {
	for _, alg := range algs {
		t.Run(alg.String(), func(t *testing.T) {
			n := node(t, alg)
			pub := n.AK.Public()
			ak, err := verify.ParseAK(pub)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ak.Public(), pub) {
				t.Error("Public() differs from the parsed bytes")
			}
			// Cross-check the name with go-tpm's independent decoder.
			tp, err := tpm2.Unmarshal[tpm2.TPMTPublic](pub)
			if err != nil {
				t.Fatalf("go-tpm cannot decode the public area: %v", err)
			}
			name, err := tpm2.ObjectName(tp)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ak.Name(), name.Buffer) || !bytes.Equal(ak.Name(), n.AK.Name()) {
				t.Errorf("Name() = %x, go-tpm says %x", ak.Name(), name.Buffer)
			}
			if !bytes.Equal(ak.QualifiedName(), verifytest.QualifiedName(name.Buffer)) {
				t.Errorf("QualifiedName() = %x", ak.QualifiedName())
			}
			want, err := tpm2.Pub(*tp)
			if err != nil {
				t.Fatal(err)
			}
			if !want.(interface{ Equal(crypto.PublicKey) bool }).Equal(ak.PublicKey()) {
				t.Errorf("PublicKey() = %v, want %v", ak.PublicKey(), want)
			}
		})
	}
}

// patch returns a copy of b with v written at off.
func patch(b []byte, off int, v ...byte) []byte {
	c := bytes.Clone(b)
	copy(c[off:], v)
	return c
}

func TestParseAKRefuses(t *testing.T) {
	rsaPub := node(t, verifytest.RSA2048).AK.Signer().Public().(*rsa.PublicKey)
	ecPub := node(t, verifytest.P256).AK.Signer().Public().(*ecdsa.PublicKey)
	goodRSA := verifytest.Template(rsaPub, algRSASSA, verifytest.AKAttributes)
	goodECC := verifytest.Template(ecPub, algECDSA, verifytest.AKAttributes)
	if _, err := verify.ParseAK(goodRSA); err != nil {
		t.Fatalf("baseline RSA key refused: %v", err)
	}
	if _, err := verify.ParseAK(goodECC); err != nil {
		t.Fatalf("baseline ECC key refused: %v", err)
	}
	weak := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 1023), E: 65537}
	weak.N.SetBit(weak.N, 0, 1)
	huge := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 8191), E: 65537}
	notFullSize := &rsa.PublicKey{N: new(big.Int).Rsh(rsaPub.N, 1), E: 65537}
	offCurve := bytes.Clone(goodECC)
	offCurve[len(offCurve)-1] ^= 1
	without := func(attr uint32) uint32 { return verifytest.AKAttributes &^ attr }

	for _, tc := range []struct {
		name   string
		public []byte
		want   string
	}{
		{"empty", nil, "truncated"},
		{"not restricted", verifytest.Template(rsaPub, algRSASSA, without(verifytest.AttrRestricted)), "restricted"},
		{"not a signing key", verifytest.Template(rsaPub, algRSASSA, without(verifytest.AttrSign)), "sign"},
		{"not fixedTPM", verifytest.Template(rsaPub, algRSASSA, without(verifytest.AttrFixedTPM)), "fixedTPM"},
		{"not fixedParent", verifytest.Template(ecPub, algECDSA, without(verifytest.AttrFixedParent)), "fixedParent"},
		{"imported key", verifytest.Template(ecPub, algECDSA, without(verifytest.AttrSensitiveDataOrigin)), "sensitiveDataOrigin"},
		{"decrypt key", verifytest.Template(rsaPub, algRSASSA, verifytest.AKAttributes|verifytest.AttrDecrypt), "decrypt"},
		{"storage key (EK-like)", verifytest.Template(rsaPub, algNull, without(verifytest.AttrSign)|verifytest.AttrDecrypt), "sign"},
		{"RSA-1024", verifytest.Template(weak, algRSASSA, verifytest.AKAttributes), "1024 bits"},
		{"RSA-8192", verifytest.Template(huge, algRSASSA, verifytest.AKAttributes), "limit"},
		{"modulus shorter than keyBits", patch(verifytest.Template(notFullSize, algRSASSA, verifytest.AKAttributes), 16, 0x08, 0x00), "not 2048 bits"},
		{"even exponent", patch(goodRSA, 18, 0, 0, 0, 4), "exponent"},
		{"exponent 1", patch(goodRSA, 18, 0, 0, 0, 1), "exponent"},
		{"nameAlg sha1", patch(goodRSA, 2, 0x00, 0x04), "nameAlg"},
		{"nameAlg null", patch(goodECC, 2, 0x00, 0x10), "nameAlg"},
		{"no signing scheme", verifytest.Template(rsaPub, algNull, verifytest.AKAttributes), "scheme 0x0010"},
		{"RSA key with ECDSA scheme", verifytest.Template(rsaPub, algECDSA, verifytest.AKAttributes), "scheme 0x0018"},
		{"ECC key with RSASSA scheme", verifytest.Template(ecPub, algRSASSA, verifytest.AKAttributes), "scheme 0x0014"},
		{"scheme hash sha1", patch(goodRSA, 14, 0x00, 0x04), "scheme hash"},
		{"symmetric AES", patch(goodRSA, 10, 0x00, 0x06), "symmetric"},
		{"ECC curve P-224", patch(goodECC, 16, 0x00, 0x02), "curve"},
		{"ECC with a KDF", patch(goodECC, 18, 0x00, 0x20), "KDF"},
		{"ECC point off the curve", offCurve, "point"},
		{"keyedhash object", patch(goodRSA, 0, 0x00, 0x08), "key type"},
		{"trailing byte", append(bytes.Clone(goodRSA), 0), "trailing"},
		{"oversized", make([]byte, 2000), "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ak, err := verify.ParseAK(tc.public)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseAK = %v, %v; want an error containing %q", ak, err, tc.want)
			}
		})
	}

	t.Run("every truncation", func(t *testing.T) {
		for _, good := range [][]byte{goodRSA, goodECC} {
			for n := range len(good) {
				if _, err := verify.ParseAK(good[:n]); err == nil {
					t.Errorf("ParseAK accepted %d of %d bytes", n, len(good))
				}
			}
		}
	})
}

func TestParseAKCopiesInput(t *testing.T) {
	pub := node(t, verifytest.P256).AK.Public()
	ak, err := verify.ParseAK(pub)
	if err != nil {
		t.Fatal(err)
	}
	want := ak.Name()
	pub[30] ^= 1
	if !bytes.Equal(ak.Name(), want) || bytes.Equal(ak.Public(), pub) {
		t.Error("the AK changed when its input buffer did")
	}
	ak.Name()[5] ^= 1
	if !bytes.Equal(ak.Name(), want) {
		t.Error("Name() returns the AK's own buffer")
	}
}
