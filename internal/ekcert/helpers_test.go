package ekcert

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// Test-only OIDs and values.
var (
	oidManufacturer = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidModel        = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidVersion      = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidSAN          = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidEKPurpose    = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	oidUnknownExt   = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}

	testNow  = time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	testInfo = Info{Manufacturer: "id:49465800", Model: "SLB9670", Version: "id:0007003D"}
)

// attr is one attribute of a test directoryName, with its ASN.1 string tag.
type attr struct {
	oid   asn1.ObjectIdentifier
	tag   int
	value string
}

// tpmAttrs are the three TPM attributes of info as UTF8Strings.
func tpmAttrs(info Info) []attr {
	return []attr{
		{oidManufacturer, tagUTF8String, info.Manufacturer},
		{oidModel, tagUTF8String, info.Model},
		{oidVersion, tagUTF8String, info.Version},
	}
}

// encodeName encodes a Name with one RDN per element of rdns.
func encodeName(t testing.TB, rdns ...[]attr) []byte {
	t.Helper()
	var name []attributeSET
	for _, rdn := range rdns {
		var set attributeSET
		for _, a := range rdn {
			set = append(set, attribute{Type: a.oid, Value: asn1.RawValue{Tag: a.tag, Bytes: []byte(a.value)}})
		}
		name = append(name, set)
	}
	der, err := asn1.Marshal(name)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// encodeSAN encodes GeneralNames holding one directoryName per given Name.
func encodeSAN(t testing.TB, names ...[]byte) []byte {
	t.Helper()
	var gns []asn1.RawValue
	for _, n := range names {
		gns = append(gns, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: generalNameDirectory, IsCompound: true, Bytes: n})
	}
	der, err := asn1.Marshal(gns)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// tpmSAN is the SubjectAltName of a well-formed EK certificate for info,
// one attribute per RDN as swtpm writes it.
func tpmSAN(t testing.TB, info Info) []byte {
	t.Helper()
	a := tpmAttrs(info)
	return encodeSAN(t, encodeName(t, a[:1], a[1:2], a[2:]))
}

// testCA is a certificate authority made for a test.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// newRootCA makes a self-signed root CA named cn with a P-256 key.
func newRootCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newCA(t, nil, cn, key, nil)
}

// newCA makes a CA certificate for key, issued by parent (self-signed when
// parent is nil), with the given extended key usages.
func newCA(t testing.TB, parent *testCA, cn string, key crypto.Signer, eku []x509.ExtKeyUsage) *testCA {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             testNow.AddDate(-5, 0, 0),
		NotAfter:              testNow.AddDate(20, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:           eku,
	}
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

// newIntermediate makes a CA with a P-256 key issued by parent.
func (ca *testCA) newIntermediate(t testing.TB, cn string, eku ...x509.ExtKeyUsage) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newCA(t, ca, cn, key, eku)
}

// pem returns the CA's certificate in PEM.
func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// bundle concatenates the CAs' certificates in PEM.
func bundle(cas ...*testCA) []byte {
	var b []byte
	for _, ca := range cas {
		b = append(b, ca.pem()...)
	}
	return b
}

// ekTemplate is an EK certificate template as the TPM vendor would make
// it: TPM SubjectAltName (critical, with an empty subject), EK purpose,
// key encipherment.
func ekTemplate(t testing.TB) *x509.Certificate {
	t.Helper()
	return &x509.Certificate{
		SerialNumber: serial(t),
		NotBefore:    testNow.AddDate(-1, 0, 0),
		NotAfter:     testNow.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{
			oidEKPurpose,
		},
		BasicConstraintsValid: true,
		ExtraExtensions: []pkix.Extension{
			{Id: oidSAN, Critical: true, Value: tpmSAN(t, testInfo)},
		},
	}
}

// issue signs tmpl for pub.
func (ca *testCA) issue(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// rsaEK returns an RSA-2048 key and its TPMT_PUBLIC in the TCG default EK
// template, as a TPM would report it.
func rsaEK(t testing.TB) (*rsa.PublicKey, []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &key.PublicKey, rsaPublicArea(&key.PublicKey, 0)
}

// rsaPublicArea encodes pub as a TPMT_PUBLIC with the given TPM exponent
// (0 meaning 65537).
func rsaPublicArea(pub *rsa.PublicKey, exponent uint32) []byte {
	tmpl := tpm2.RSAEKTemplate
	parms := *must(tmpl.Parameters.RSADetail())
	parms.Exponent = exponent
	tmpl.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &parms)
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: pub.N.Bytes()})
	return tpm2.Marshal(tmpl)
}

// eccEK returns a P-256 key and its TPMT_PUBLIC in the TCG default ECC EK
// template.
func eccEK(t testing.TB) (*ecdsa.PublicKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &key.PublicKey, eccPublicArea(t, &key.PublicKey)
}

func eccPublicArea(t testing.TB, pub *ecdsa.PublicKey) []byte {
	t.Helper()
	ek, err := pub.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	b := ek.Bytes() // 0x04 || X || Y, each 32 bytes
	tmpl := tpm2.ECCEKTemplate
	tmpl.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: b[1:33]},
		Y: tpm2.TPM2BECCParameter{Buffer: b[33:]},
	})
	return tpm2.Marshal(tmpl)
}

// serial returns a random certificate serial number.
func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
