// Package ekcert validates TPM endorsement key (EK) certificates against a
// configured bundle of TPM vendor CAs, so that the server can admit a node
// whose EK a TPM manufacturer vouches for (RATS: the vendor is the Endorser).
//
// What is trusted: only the CA bundle the operator configured. The EK
// certificate and the EK public area come from the node being enrolled and
// are hostile until Verify has accepted them; Verify bounds their sizes and
// parses them strictly. A valid EK certificate proves that the key is a TPM's
// EK; that the AK the node enrolls lives in that same TPM is proven
// separately, by credential activation (package enroll).
//
// EK certificates carry a critical SubjectAltName holding only a
// directoryName with the TPM's manufacturer, model and version (TCG EK
// Credential Profile). crypto/x509 does not understand that name and reports
// the extension as unhandled, which makes Verify fail; this package parses
// and checks that extension itself and only then lets x509 verify the chain.
//
// The package does no I/O.
package ekcert

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Limits on node-supplied bytes. Real EK certificates are about 1 KiB and an
// EK's TPMT_PUBLIC a few hundred bytes.
const (
	MaxCert   = 8 << 10
	MaxPublic = 2 << 10
)

// Info is what the EK certificate's TPM SubjectAltName says about the TPM.
// The values are as the vendor wrote them: Manufacturer is the TCG vendor ID
// ("id:" and eight hex digits, for example "id:49465800" for Infineon);
// Model and Version are vendor-defined strings (Version is often "id:" and
// hex digits too).
type Info struct {
	Manufacturer string
	Model        string
	Version      string
}

// Verifier checks EK certificates against a fixed set of vendor CAs and
// their revocation lists. It is immutable once built and safe for
// concurrent use.
type Verifier struct {
	roots         *x509.CertPool
	intermediates *x509.CertPool
	cas           []*x509.Certificate
	// revoked holds, per issuer (its raw subject), the serial numbers its
	// CRLs list.
	revoked map[string]map[string]bool
}

// NewVerifier returns a Verifier that trusts the CA certificates in
// bundlePEM, a concatenation of PEM "CERTIFICATE" blocks (text between
// blocks is ignored). Self-signed certificates become trust anchors; the
// other certificates must be CAs and are used as intermediates, so that a
// vendor's root and its issuing CAs can be configured together. An
// intermediate is trusted only through a chain to a root in the bundle.
//
// The bundle must hold at least one root; a block of any other type (a
// private key pasted by mistake, say) or a certificate that is not a CA is
// an error, since it shows the bundle is not what the operator thinks.
func NewVerifier(bundlePEM []byte) (*Verifier, error) {
	v := &Verifier{roots: x509.NewCertPool(), intermediates: x509.NewCertPool(), revoked: map[string]map[string]bool{}}
	var nroots, n int
	for rest := bundlePEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n++
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("load EK CA bundle: block %d is a %q, want CERTIFICATE", n, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("load EK CA bundle: certificate %d: %w", n, err)
		}
		if !cert.IsCA || !cert.BasicConstraintsValid {
			return nil, fmt.Errorf("load EK CA bundle: certificate %d (%s) is not a CA", n, cert.Subject)
		}
		v.cas = append(v.cas, cert)
		if selfSigned(cert) {
			v.roots.AddCert(cert)
			nroots++
		} else {
			v.intermediates.AddCert(cert)
		}
	}
	if n == 0 {
		return nil, errors.New("load EK CA bundle: no PEM certificates")
	}
	if nroots == 0 {
		return nil, fmt.Errorf("load EK CA bundle: none of the %d certificates is a self-signed root", n)
	}
	return v, nil
}

// AddCRL adds a vendor's certificate revocation list (DER or PEM "X509
// CRL"): EK certificates, and issuing CAs, whose serial it lists are
// refused from then on. The CRL must be signed by a CA of the bundle. It is
// used whatever its NextUpdate says: a stale list still names what it
// revoked. AddCRL is for setting up; it must not race with Verify.
func (v *Verifier) AddCRL(b []byte) error {
	if block, _ := pem.Decode(b); block != nil {
		if block.Type != "X509 CRL" {
			return fmt.Errorf("load EK CRL: a %q block, want X509 CRL", block.Type)
		}
		b = block.Bytes
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return fmt.Errorf("load EK CRL: %w", err)
	}
	i := slices.IndexFunc(v.cas, func(ca *x509.Certificate) bool {
		return slices.Equal(ca.RawSubject, crl.RawIssuer) && crl.CheckSignatureFrom(ca) == nil
	})
	if i < 0 {
		return fmt.Errorf("load EK CRL of %s: not signed by a CA of the EK CA bundle", crl.Issuer)
	}
	set := v.revoked[string(crl.RawIssuer)]
	if set == nil {
		set = map[string]bool{}
		v.revoked[string(crl.RawIssuer)] = set
	}
	for _, e := range crl.RevokedCertificateEntries {
		set[e.SerialNumber.String()] = true
	}
	return nil
}

// revokedIn returns the first certificate of chain that a CRL revokes.
func (v *Verifier) revokedIn(chain []*x509.Certificate) *x509.Certificate {
	for _, c := range chain {
		if v.revoked[string(c.RawIssuer)][c.SerialNumber.String()] {
			return c
		}
	}
	return nil
}

// Inspect checks what can be checked of an EK certificate without a CA
// bundle: at most MaxCert bytes, DER X.509, not a CA, certifying ekPublic.
// It returns the parsed certificate (whose chain nobody has checked).
func Inspect(certDER, ekPublic []byte) (*x509.Certificate, error) {
	if len(certDER) == 0 {
		return nil, errors.New("no certificate")
	}
	if len(certDER) > MaxCert {
		return nil, fmt.Errorf("%d bytes exceeds %d", len(certDER), MaxCert)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, err
	}
	if cert.IsCA {
		return nil, errors.New("it is a CA certificate")
	}
	if err := matchEK(cert.PublicKey, ekPublic); err != nil {
		return nil, err
	}
	return cert, nil
}

// selfSigned reports whether cert names itself as issuer and its signature
// verifies under its own key.
func selfSigned(cert *x509.Certificate) bool {
	return slices.Equal(cert.RawIssuer, cert.RawSubject) && cert.CheckSignatureFrom(cert) == nil
}

// Verify checks that certDER is an EK certificate, valid at now, that
// chains to a CA of the bundle and certifies ekPublic (the EK's TPMT_PUBLIC
// as the TPM returns it), and returns what its TPM SubjectAltName says.
//
// The certificate must:
//   - parse as DER X.509 and be at most MaxCert bytes;
//   - carry a well-formed TPM SubjectAltName (see Info); it is mandatory in
//     the EK Credential Profile, so a certificate without one is refused;
//   - have no other critical extension that crypto/x509 does not handle;
//   - not be a CA, and allow EK use: in the leaf and in every CA of the
//     chain, an extended key usage extension, when present, must include
//     the TCG EK certificate purpose (2.23.133.8.1) or anyExtendedKeyUsage;
//   - certify the same key as ekPublic: the same RSA modulus and exponent,
//     or the same ECC curve and point.
//
// now is the verification time; callers pass their injected clock's time.
// A nil error means every check passed.
func (v *Verifier) Verify(certDER, ekPublic []byte, now time.Time) (Info, error) {
	if now.IsZero() {
		return Info{}, errors.New("verify EK certificate: no verification time")
	}
	if len(certDER) == 0 {
		return Info{}, errors.New("verify EK certificate: no certificate")
	}
	if len(certDER) > MaxCert {
		return Info{}, fmt.Errorf("verify EK certificate: %d bytes exceeds %d", len(certDER), MaxCert)
	}
	parsed, err := x509.ParseCertificate(certDER)
	if err != nil {
		return Info{}, fmt.Errorf("verify EK certificate: %w", err)
	}
	if parsed.IsCA {
		return Info{}, errors.New("verify EK certificate: it is a CA certificate")
	}
	info, cert, err := handleTPMSAN(parsed)
	if err != nil {
		return Info{}, fmt.Errorf("verify EK certificate: TPM SubjectAltName: %w", err)
	}
	// x509's Verify would refuse these too, without naming them.
	if len(cert.UnhandledCriticalExtensions) > 0 {
		return Info{}, fmt.Errorf("verify EK certificate: unhandled critical extension %v", cert.UnhandledCriticalExtensions)
	}
	if err := matchEK(cert.PublicKey, ekPublic); err != nil {
		return Info{}, fmt.Errorf("verify EK certificate: %w", err)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: v.intermediates,
		CurrentTime:   now,
		// x509 knows no EK purpose; allowEKUsage checks it on the chains.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return Info{}, fmt.Errorf("verify EK certificate chain: %w", err)
	}
	if !slices.ContainsFunc(chains, allowEKUsage) {
		return Info{}, errors.New("verify EK certificate: extended key usage of the certificate or a CA does not allow EK certificates (2.23.133.8.1)")
	}
	for _, chain := range chains {
		if c := v.revokedIn(chain); c != nil {
			return Info{}, fmt.Errorf("verify EK certificate: %s (serial %s) is revoked by its issuer's CRL", c.Subject, c.SerialNumber)
		}
	}
	return info, nil
}

// handleTPMSAN finds and parses the TPM SubjectAltName of cert and returns
// a shallow copy of cert from whose UnhandledCriticalExtensions the SAN has
// been removed, so that x509's Verify accepts it. cert itself is left as
// it was, still saying what x509 did not handle.
func handleTPMSAN(cert *x509.Certificate) (Info, *x509.Certificate, error) {
	// x509.ParseCertificate refuses a repeated extension, so there is at
	// most one SAN.
	i := slices.IndexFunc(cert.Extensions, func(e pkix.Extension) bool { return isSAN(e.Id) })
	if i < 0 {
		return Info{}, nil, errors.New("missing")
	}
	info, err := parseTPMSAN(cert.Extensions[i].Value)
	if err != nil {
		return Info{}, nil, err
	}
	c := *cert
	c.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(cert.UnhandledCriticalExtensions), isSAN)
	return info, &c, nil
}

// allowEKUsage reports whether every certificate of chain either has no
// extended key usage extension or allows the TCG EK certificate purpose
// (tcg-kp-EKCertificate, 2.23.133.8.1) or any purpose.
func allowEKUsage(chain []*x509.Certificate) bool {
	for _, c := range chain {
		if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
			continue
		}
		if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) &&
			!slices.ContainsFunc(c.UnknownExtKeyUsage, isEKCertificatePurpose) {
			return false
		}
	}
	return true
}

func isEKCertificatePurpose(oid asn1.ObjectIdentifier) bool {
	return oid.Equal(asn1.ObjectIdentifier{2, 23, 133, 8, 1})
}
