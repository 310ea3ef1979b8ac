package ekcert

import (
	"crypto/x509"
	"testing"
)

// FuzzVerify feeds arbitrary EK certificates and EK public areas, both
// node-supplied, to Verify: it must not panic, and it must accept nothing
// but the valid seed pairs (anything else would need a forged signature).
func FuzzVerify(f *testing.F) {
	root := newRootCA(f, "TPM Vendor Root CA")
	inter := root.newIntermediate(f, "TPM Vendor EK CA 1")
	v, err := NewVerifier(bundle(root, inter))
	if err != nil {
		f.Fatal(err)
	}
	rsaKey, rsaPub := rsaEK(f)
	eccKey, eccPub := eccEK(f)
	rsaCert := inter.issue(f, ekTemplate(f), rsaKey)
	eccTmpl := ekTemplate(f)
	eccTmpl.KeyUsage = x509.KeyUsageKeyAgreement
	eccCert := inter.issue(f, eccTmpl, eccKey)
	f.Add(rsaCert, rsaPub)
	f.Add(eccCert, eccPub)
	f.Add(rsaCert, eccPub)
	f.Add(eccCert[:len(eccCert)/2], eccPub[:len(eccPub)/2])
	f.Fuzz(func(t *testing.T, cert, ekPublic []byte) {
		info, err := v.Verify(cert, ekPublic, testNow)
		if err != nil {
			if info != (Info{}) {
				t.Fatalf("error %v with a non-zero Info %+v", err, info)
			}
			return
		}
		if info != testInfo {
			t.Fatalf("accepted a certificate with %+v", info)
		}
	})
}
