package tamper_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"

	"trustpool/internal/agent/swtpm"
	"trustpool/internal/agent/tpm"
	"trustpool/internal/evidence"
	"trustpool/internal/integrity"
	"trustpool/internal/pki"
	"trustpool/internal/server"
	"trustpool/internal/store"
)

// TestSoftwareTPMNeedsVendorEKCert: credential activation proves that an
// AK and an EK share a TPM, not that the TPM is hardware. With a stolen
// join token, an attacker could enroll a software TPM (here swtpm, which
// has no EK certificate) and extend it with a golden host's digests. A
// server started with --ek-ca-bundle and --require-ek-cert refuses it, and
// refuses an EK certificate made by anyone but a vendor CA in the bundle.
func TestSoftwareTPMNeedsVendorEKCert(t *testing.T) {
	needSWTPM(t)
	vendor, err := pki.LoadOrCreateCA(t.TempDir(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, integrity.Config{}, func(c *server.Config) {
		c.EKCABundle, c.RequireEKCert = vendor.CertPEM, true
	})
	p, err := swtpm.Start(f.ctx, swtpm.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	tp, err := tpm.Open(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	var tok struct{ Token string }
	f.mustCall("POST", "/v1/join-tokens", map[string]string{"host": "stolen"}, &tok)

	forged := forgedEKCert(t, tp)
	for _, c := range []struct {
		name string
		edit func(*evidence.EnrollRequest)
		want string
	}{
		{"no EK certificate", func(r *evidence.EnrollRequest) { r.EKCert = nil }, "required"},
		{"an EK certificate from the attacker's CA", func(r *evidence.EnrollRequest) { r.EKCert = forged }, "refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := f.in(t).beginEnroll(t, tp, "stolen", tok.Token, c.edit)
			if code != http.StatusForbidden || !strings.Contains(string(body), c.want) {
				t.Fatalf("enrollment of a software TPM with %s: %d %s, want 403 %s", c.name, code, body, c.want)
			}
		})
	}
	if _, err := f.srv.Store().GetHost(f.ctx, "stolen"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("host stolen: %v, want not found", err)
	}
}

// forgedEKCert is an EK certificate for tp's EK from a CA the attacker made.
func forgedEKCert(t *testing.T, tp *tpm.TPM) []byte {
	t.Helper()
	ek, err := tp.EKPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Totally A TPM Vendor CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, ek, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
