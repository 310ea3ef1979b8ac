package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"trustpool/internal/agent/swtpm/swtpmtest"
)

// fakeEKCert returns a DER certificate for ekPub, issued by a throwaway CA,
// padded past 1 KiB so that reading it takes more than one TPM2_NV_Read.
func fakeEKCert(t *testing.T, ekPub crypto.PublicKey) []byte {
	t.Helper()
	ca, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test EK"},
		NotBefore:    now,
		NotAfter:     now.AddDate(10, 0, 0),
		ExtraExtensions: []pkix.Extension{{
			Id:    asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1},
			Value: bytes.Repeat([]byte{0x04}, 1500),
		}},
	}
	issuer := &x509.Certificate{Subject: pkix.Name{CommonName: "test EK CA"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, ekPub, ca)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// provisionEKCert defines the EK certificate index with the platform
// hierarchy, as a TPM vendor does, and writes cert into it.
func provisionEKCert(t *testing.T, tr transport.TPM, attrs tpm2.TPMANV, cert []byte) {
	t.Helper()
	attrs.PPWrite, attrs.WriteDefine, attrs.PPRead, attrs.NoDA, attrs.PlatformCreate = true, true, true, true, true
	pub := tpm2.TPMSNVPublic{
		NVIndex:    ekCertIndex,
		NameAlg:    tpm2.TPMAlgSHA256,
		Attributes: attrs,
		DataSize:   uint16(len(cert)),
	}
	if _, err := (tpm2.NVDefineSpace{
		AuthHandle: tpm2.TPMRHPlatform,
		PublicInfo: tpm2.New2B(pub),
	}).Execute(tr); err != nil {
		t.Fatalf("define EK certificate index: %v", err)
	}
	pub.Attributes.Written = true
	name, err := tpm2.NVName(&pub)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(cert); off += 512 {
		chunk := cert[off:min(off+512, len(cert))]
		if _, err := (tpm2.NVWrite{
			AuthHandle: tpm2.TPMRHPlatform,
			NVIndex:    tpm2.NamedHandle{Handle: ekCertIndex, Name: *name},
			Data:       tpm2.TPM2BMaxNVBuffer{Buffer: chunk},
			Offset:     uint16(off),
		}).Execute(tr); err != nil {
			t.Fatalf("write EK certificate at %d: %v", off, err)
		}
	}
}

func TestEKCert(t *testing.T) {
	tests := []struct {
		name  string
		attrs tpm2.TPMANV
	}{
		{"readable with its own auth", tpm2.TPMANV{AuthRead: true, OwnerRead: true}},
		{"readable by the owner only", tpm2.TPMANV{OwnerRead: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := swtpmtest.Start(t, "")
			tp, err := Open(p.Addr())
			if err != nil {
				t.Fatal(err)
			}
			ekPub, err := tp.EKPublicKey()
			if err != nil {
				t.Fatal(err)
			}
			if err := tp.Close(); err != nil {
				t.Fatal(err)
			}
			cert := fakeEKCert(t, ekPub)

			raw, err := dialSwtpm(strings.TrimPrefix(p.Addr(), SwtpmScheme))
			if err != nil {
				t.Fatal(err)
			}
			provisionEKCert(t, raw, tc.attrs, cert)
			raw.Close()

			tp, err = Open(p.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer tp.Close()
			_, got, err := tp.EK()
			if err != nil {
				t.Fatalf("EK: %v", err)
			}
			if !bytes.Equal(got, cert) {
				t.Fatalf("EK certificate = %d bytes, want the %d provisioned", len(got), len(cert))
			}
			parsed, err := x509.ParseCertificate(got)
			if err != nil {
				t.Fatal(err)
			}
			if !parsed.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(ekPub) {
				t.Error("certificate does not certify the EK")
			}
		})
	}
}
