package ekcert

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

func TestNewVerifier(t *testing.T) {
	root := newRootCA(t, "TPM Vendor Root CA")
	inter := root.newIntermediate(t, "TPM Vendor EK CA 1")
	other := newRootCA(t, "Other TPM Vendor Root CA")
	leaf := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.issue(t, ekTemplate(t), root.key.Public())})

	tests := []struct {
		name    string
		bundle  []byte
		wantErr string
	}{
		{"one root", bundle(root), ""},
		{"root and intermediate", bundle(root, inter), ""},
		{"intermediate first", bundle(inter, root), ""},
		{"two vendors", bundle(root, other, inter), ""},
		{"text around blocks", append(append([]byte("# vendor roots\n"), root.pem()...), "trailer\n"...), ""},
		{"empty", nil, "no PEM certificates"},
		{"not PEM", []byte("MIIB..."), "no PEM certificates"},
		{"intermediate only", bundle(inter), "none of the 1 certificates is a self-signed root"},
		{"not a CA", append(bundle(root), leaf...), "is not a CA"},
		{"private key", append(bundle(root), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})...), `block 2 is a "PRIVATE KEY"`},
		{"bad certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), "certificate 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.bundle)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("NewVerifier = %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || v == nil {
				t.Fatalf("NewVerifier = %v, %v", v, err)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	root := newRootCA(t, "TPM Vendor Root CA")
	inter := root.newIntermediate(t, "TPM Vendor EK CA 1")
	// Same names as the vendor's, other keys: a forgery's CA.
	impostor := newRootCA(t, "TPM Vendor Root CA")
	impostorInter := impostor.newIntermediate(t, "TPM Vendor EK CA 1")
	serverOnlyInter := root.newIntermediate(t, "TPM Vendor TLS CA", x509.ExtKeyUsageServerAuth)
	anyPurposeInter := root.newIntermediate(t, "TPM Vendor EK CA 2", x509.ExtKeyUsageAny)

	rsaKey, rsaPub := rsaEK(t)
	_, otherRSAPub := rsaEK(t)
	eccKey, eccPub := eccEK(t)
	otherECC, _ := eccEK(t)

	// issue makes an EK certificate for key from the default template,
	// changed by edit.
	issue := func(ca *testCA, key any, edit func(*x509.Certificate)) []byte {
		tmpl := ekTemplate(t)
		if edit != nil {
			edit(tmpl)
		}
		return ca.issue(t, tmpl, key)
	}
	valid := issue(inter, rsaKey, nil)
	setSAN := func(value []byte, critical bool) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{{Id: oidSAN, Critical: critical, Value: value}}
		}
	}
	addExt := func(critical bool) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			c.ExtraExtensions = append(c.ExtraExtensions, pkix.Extension{Id: oidUnknownExt, Critical: critical, Value: []byte{5, 0}})
		}
	}
	a := tpmAttrs(testInfo)
	tampered := append([]byte(nil), valid...)
	tampered[len(tampered)-1] ^= 1

	full := bundle(root, inter, serverOnlyInter)
	tests := []struct {
		name     string
		bundle   []byte
		cert     []byte
		ekPublic []byte
		now      time.Time // testNow when zero
		noTime   bool      // pass the zero time
		wantErr  string    // substring; empty for success
	}{
		{name: "valid RSA EK via intermediate", cert: valid, ekPublic: rsaPub},
		{name: "valid ECC EK", cert: issue(inter, eccKey, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyAgreement }), ekPublic: eccPub},
		{name: "issued by the root", bundle: bundle(root), cert: issue(root, rsaKey, nil), ekPublic: rsaPub},
		{name: "multi-valued RDN", cert: issue(inter, rsaKey, setSAN(encodeSAN(t, encodeName(t, a)), true)), ekPublic: rsaPub},
		{name: "SAN not critical", cert: issue(inter, rsaKey, setSAN(tpmSAN(t, testInfo), false)), ekPublic: rsaPub},
		{name: "no extended key usage", cert: issue(inter, rsaKey, func(c *x509.Certificate) { c.UnknownExtKeyUsage = nil }), ekPublic: rsaPub},
		{name: "any extended key usage", cert: issue(inter, rsaKey, func(c *x509.Certificate) {
			c.UnknownExtKeyUsage, c.ExtKeyUsage = nil, []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
		}), ekPublic: rsaPub},
		{name: "unknown non-critical extension", cert: issue(inter, rsaKey, addExt(false)), ekPublic: rsaPub},
		{name: "TPM exponent 65537 written out", cert: valid, ekPublic: rsaPublicArea(rsaKey, 65537)},
		{name: "issued by a CA for any purpose", bundle: bundle(root, anyPurposeInter), cert: issue(anyPurposeInter, rsaKey, nil), ekPublic: rsaPub},

		{name: "unknown critical extension", cert: issue(inter, rsaKey, addExt(true)), ekPublic: rsaPub, wantErr: "unhandled critical extension"},
		{name: "wrong CA bundle", bundle: bundle(impostor, impostorInter), cert: valid, ekPublic: rsaPub, wantErr: "unknown authority"},
		{name: "issued by an impostor with the vendor's names", cert: issue(impostorInter, rsaKey, nil), ekPublic: rsaPub, wantErr: "unknown authority"},
		{name: "intermediate not in bundle", bundle: bundle(root), cert: valid, ekPublic: rsaPub, wantErr: "unknown authority"},
		{name: "tampered signature", cert: tampered, ekPublic: rsaPub, wantErr: "verify EK certificate chain"},
		{name: "expired", cert: valid, ekPublic: rsaPub, now: testNow.AddDate(10, 0, 1), wantErr: "expired"},
		{name: "not yet valid", cert: valid, ekPublic: rsaPub, now: testNow.AddDate(-1, 0, -1), wantErr: "not yet valid"},
		{name: "no verification time", cert: valid, ekPublic: rsaPub, noTime: true, wantErr: "no verification time"},

		{name: "certificate for another EK", cert: valid, ekPublic: otherRSAPub, wantErr: "another RSA key"},
		{name: "other exponent", cert: valid, ekPublic: rsaPublicArea(rsaKey, 3), wantErr: "another RSA key"},
		{name: "RSA certificate, ECC EK", cert: valid, ekPublic: eccPub, wantErr: "the EK is an ECC key"},
		{name: "ECC certificate, RSA EK", cert: issue(inter, eccKey, nil), ekPublic: rsaPub, wantErr: "the EK is an RSA key"},
		{name: "ECC certificate for another EK", cert: issue(inter, eccKey, nil), ekPublic: eccPublicArea(t, otherECC), wantErr: "another ECC key"},
		{name: "no EK public area", cert: valid, ekPublic: nil, wantErr: "no EK public area"},
		{name: "EK public area garbage", cert: valid, ekPublic: []byte{0, 1, 0, 0xb}, wantErr: "decode EK public area"},
		{name: "EK public area trailing byte", cert: valid, ekPublic: append(append([]byte(nil), rsaPub...), 0), wantErr: "trailing or non-canonical"},
		{name: "EK public area oversized", cert: valid, ekPublic: make([]byte, MaxPublic+1), wantErr: "exceeds"},

		{name: "no SAN", cert: issue(inter, rsaKey, func(c *x509.Certificate) { c.ExtraExtensions = nil }), ekPublic: rsaPub, wantErr: "TPM SubjectAltName: missing"},
		{name: "SAN without model", cert: issue(inter, rsaKey, setSAN(encodeSAN(t, encodeName(t, []attr{a[0], a[2]})), true)), ekPublic: rsaPub, wantErr: "no TPM model"},
		{name: "SAN with an extra attribute", cert: issue(inter, rsaKey, setSAN(encodeSAN(t, encodeName(t, append(a, attr{asn1.ObjectIdentifier{2, 5, 4, 3}, tagUTF8String, "x"}))), true)), ekPublic: rsaPub, wantErr: "unexpected attribute"},
		{name: "SAN with a DNS name", cert: issue(inter, rsaKey, func(c *x509.Certificate) {
			c.ExtraExtensions, c.DNSNames = nil, []string{"node1.example"}
		}), ekPublic: rsaPub, wantErr: "want a directoryName"},
		{name: "SAN not DER", cert: issue(inter, rsaKey, setSAN([]byte{0x30, 0x03, 0xa4, 0x01}, true)), ekPublic: rsaPub, wantErr: "x509"},

		{name: "TLS server purpose only", cert: issue(inter, rsaKey, func(c *x509.Certificate) {
			c.UnknownExtKeyUsage, c.ExtKeyUsage = nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}), ekPublic: rsaPub, wantErr: "extended key usage"},
		{name: "issued by a CA restricted to TLS", cert: issue(serverOnlyInter, rsaKey, nil), ekPublic: rsaPub, wantErr: "extended key usage"},
		{name: "certificate is a CA", cert: issue(inter, rsaKey, func(c *x509.Certificate) { c.IsCA = true }), ekPublic: rsaPub, wantErr: "CA certificate"},
		{name: "no certificate", cert: nil, ekPublic: rsaPub, wantErr: "no certificate"},
		{name: "certificate garbage", cert: []byte("-----BEGIN CERTIFICATE-----"), ekPublic: rsaPub, wantErr: "x509"},
		{name: "certificate oversized", cert: make([]byte, MaxCert+1), ekPublic: rsaPub, wantErr: "exceeds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.bundle
			if b == nil {
				b = full
			}
			v, err := NewVerifier(b)
			if err != nil {
				t.Fatal(err)
			}
			now := tc.now
			if now.IsZero() && !tc.noTime {
				now = testNow
			}
			info, err := v.Verify(tc.cert, tc.ekPublic, now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Verify = %+v, %v; want error containing %q", info, err, tc.wantErr)
				}
				t.Logf("Verify: %v", err)
				if info != (Info{}) {
					t.Errorf("Verify returned %+v with its error", info)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if info != testInfo {
				t.Errorf("Verify = %+v, want %+v", info, testInfo)
			}
		})
	}
}

// A vendor's CRL revokes an EK certificate (or an issuing CA) at once; a CRL
// not signed by a CA of the bundle is refused when loaded.
func TestCRL(t *testing.T) {
	root := newRootCA(t, "TPM Vendor Root CA")
	inter := root.newIntermediate(t, "TPM Vendor EK CA 1")
	rsaKey, rsaPub := rsaEK(t)
	otherKey, otherPub := rsaEK(t)
	revokedTmpl, keptTmpl := ekTemplate(t), ekTemplate(t)
	revoked := inter.issue(t, revokedTmpl, rsaKey)
	kept := inter.issue(t, keptTmpl, otherKey)
	crl := func(ca *testCA, serials ...*big.Int) []byte {
		var entries []x509.RevocationListEntry
		for _, s := range serials {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: testNow.AddDate(0, -1, 0)})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(1), ThisUpdate: testNow.AddDate(0, -1, 0), NextUpdate: testNow.AddDate(0, -1, 7),
			RevokedCertificateEntries: entries,
		}, ca.cert, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	v := must(NewVerifier(bundle(root, inter)))
	if err := v.AddCRL(crl(newRootCA(t, "TPM Vendor EK CA 1"), revokedTmpl.SerialNumber)); err == nil {
		t.Fatal("a CRL signed by a stranger with the CA's name was loaded")
	}
	if _, err := v.Verify(revoked, rsaPub, testNow); err != nil {
		t.Fatalf("before the CRL: %v", err)
	}
	// A stale CRL (past NextUpdate) still revokes, in PEM as in DER.
	if err := v.AddCRL(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl(inter, revokedTmpl.SerialNumber)})); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(revoked, rsaPub, testNow); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked EK certificate: %v, want revoked", err)
	}
	if _, err := v.Verify(kept, otherPub, testNow); err != nil {
		t.Fatalf("an EK certificate the CRL does not list: %v", err)
	}
	// Revoking the issuing CA revokes everything under it.
	if err := v.AddCRL(crl(root, inter.cert.SerialNumber)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(kept, otherPub, testNow); err == nil {
		t.Fatal("an EK certificate under a revoked CA verified")
	}
}

// Without a CA bundle an EK certificate is still parsed, bounded and bound
// to the EK (Inspect).
func TestInspect(t *testing.T) {
	inter := newRootCA(t, "TPM Vendor Root CA").newIntermediate(t, "TPM Vendor EK CA 1")
	key, pub := rsaEK(t)
	_, otherPub := rsaEK(t)
	cert := inter.issue(t, ekTemplate(t), key)
	if _, err := Inspect(cert, pub); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ cert, pub []byte }{
		"garbage":     {[]byte("not a certificate"), pub},
		"another EK":  {cert, otherPub},
		"oversized":   {make([]byte, MaxCert+1), pub},
		"a CA":        {inter.cert.Raw, pub},
		"none at all": {nil, pub},
	} {
		if _, err := Inspect(c.cert, c.pub); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
