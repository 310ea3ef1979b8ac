package ekcert

import (
	"crypto/rand"
	"crypto/rsa"
	"testing"
)

// BenchmarkVerify measures one EK certificate check (parse, SAN, key match,
// chain) on chains shaped like a vendor's: RSA-2048 root and issuing CA
// with an RSA-2048 EK, and an all-P-256 chain.
func BenchmarkVerify(b *testing.B) {
	rsaCA := func(parent *testCA, cn string) *testCA {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			b.Fatal(err)
		}
		return newCA(b, parent, cn, key, nil)
	}
	rsaRoot := rsaCA(nil, "RSA Root")
	ecRoot := newRootCA(b, "P-256 Root")
	for _, bc := range []struct {
		name        string
		root, inter *testCA
	}{
		{"rsa2048", rsaRoot, rsaCA(rsaRoot, "RSA EK CA")},
		{"p256", ecRoot, ecRoot.newIntermediate(b, "P-256 EK CA")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			v, err := NewVerifier(bundle(bc.root, bc.inter))
			if err != nil {
				b.Fatal(err)
			}
			key, pub := rsaEK(b)
			cert := bc.inter.issue(b, ekTemplate(b), key)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(cert, pub, testNow); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseTPMSAN(b *testing.B) {
	der := tpmSAN(b, testInfo)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseTPMSAN(der); err != nil {
			b.Fatal(err)
		}
	}
}
