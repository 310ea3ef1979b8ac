package verify_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"math/big"
	"testing"

	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

var benchAlgs = []verifytest.Alg{verifytest.RSA2048, verifytest.P256}

// benchInput is a node's evidence as the server verifies it: sha256 PCRs
// 0-7 quoted, a 51-event sha1+sha256 firmware log.
func benchInput(b *testing.B, alg verifytest.Alg) (*verify.AK, verify.Input, *verifytest.Node) {
	b.Helper()
	n := node(b, alg)
	ak := enrolled(b, n)
	nonce := newNonce(b)
	in := verify.Input{Nonce: nonce, Required: verifytest.DefaultSelection(), Evidence: evidenceFor(b, n, nonce)}
	if res := ak.Verify(in); !res.OK() {
		b.Fatalf("Verify: %v", res.Reasons)
	}
	return ak, in, n
}

func reportHosts(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hosts/s")
}

// BenchmarkVerify is full verification: decode, signature, signer, nonce,
// selection, PCR digest, log parse and replay of 51 events over 8 PCRs.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range benchAlgs {
		b.Run(alg.String(), func(b *testing.B) {
			ak, in, _ := benchInput(b, alg)
			b.ReportAllocs()
			for b.Loop() {
				if res := ak.Verify(in); !res.OK() {
					b.Fatal(res.Reasons)
				}
			}
			reportHosts(b)
		})
		b.Run(alg.String()+"/parallel", func(b *testing.B) {
			ak, in, _ := benchInput(b, alg)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if res := ak.Verify(in); !res.OK() {
						b.Error(res.Reasons)
						return
					}
				}
			})
			reportHosts(b)
		})
	}
}

// BenchmarkSignatureOnly is the floor: hashing the quote and verifying its
// signature with the same key, nothing else.
func BenchmarkSignatureOnly(b *testing.B) {
	for _, alg := range benchAlgs {
		_, in, n := benchInput(b, alg)
		quote, sig := in.Evidence.Quote, in.Evidence.Signature
		var verifySig func() bool
		switch pub := n.AK.Signer().Public().(type) {
		case *rsa.PublicKey:
			raw := sig[6:] // TPMT_SIGNATURE: alg, hash, size, signature
			verifySig = func() bool {
				d := sha256.Sum256(quote)
				return rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], raw) == nil
			}
		case *ecdsa.PublicKey:
			r := new(big.Int).SetBytes(sig[6:38])
			s := new(big.Int).SetBytes(sig[40:72])
			der, err := asn1.Marshal(struct{ R, S *big.Int }{r, s})
			if err != nil {
				b.Fatal(err)
			}
			verifySig = func() bool {
				d := sha256.Sum256(quote)
				return ecdsa.VerifyASN1(pub, d[:], der)
			}
		}
		if !verifySig() {
			b.Fatal("signature does not verify")
		}
		b.Run(alg.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !verifySig() {
					b.Fatal("signature does not verify")
				}
			}
			reportHosts(b)
		})
		b.Run(alg.String()+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if !verifySig() {
						b.Error("signature does not verify")
						return
					}
				}
			})
			reportHosts(b)
		})
	}
}
