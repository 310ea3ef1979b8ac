package ekcert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// matchEK checks that certKey, the key an EK certificate certifies, is the
// key in ekPublic, a TPMT_PUBLIC. RSA keys match on modulus and exponent
// (a TPM exponent of 0 means 65537), ECC keys on curve and point; the point
// must be on the curve.
func matchEK(certKey crypto.PublicKey, ekPublic []byte) error {
	if len(ekPublic) == 0 {
		return errors.New("no EK public area")
	}
	if len(ekPublic) > MaxPublic {
		return fmt.Errorf("EK public area of %d bytes exceeds %d", len(ekPublic), MaxPublic)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPublic)
	if err != nil {
		return fmt.Errorf("decode EK public area: %w", err)
	}
	// Unmarshal ignores what follows the structure; the EK public area
	// also names the node, so it must be exactly one canonical TPMT_PUBLIC.
	if !bytes.Equal(tpm2.Marshal(pub), ekPublic) {
		return errors.New("EK public area has trailing or non-canonical bytes")
	}
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return fmt.Errorf("decode EK RSA parameters: %w", err)
		}
		n, err := pub.Unique.RSA()
		if err != nil {
			return fmt.Errorf("decode EK RSA modulus: %w", err)
		}
		ek, err := tpm2.RSAPub(parms, n)
		if err != nil {
			return fmt.Errorf("decode EK RSA key: %w", err)
		}
		ck, ok := certKey.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("certificate holds a %T, the EK is an RSA key", certKey)
		}
		if !ck.Equal(ek) {
			return errors.New("certificate is for another RSA key than the EK")
		}
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return fmt.Errorf("decode EK ECC parameters: %w", err)
		}
		point, err := pub.Unique.ECC()
		if err != nil {
			return fmt.Errorf("decode EK ECC point: %w", err)
		}
		// ECDHPub checks that the point is on the curve.
		ek, err := tpm2.ECDHPub(parms, point)
		if err != nil {
			return fmt.Errorf("decode EK ECC key: %w", err)
		}
		ck, ok := certKey.(*ecdsa.PublicKey)
		if !ok {
			return fmt.Errorf("certificate holds a %T, the EK is an ECC key", certKey)
		}
		cek, err := ck.ECDH()
		if err != nil {
			return fmt.Errorf("certificate's ECC key: %w", err)
		}
		if !cek.Equal(ek) {
			return errors.New("certificate is for another ECC key than the EK")
		}
	default:
		return fmt.Errorf("EK of type 0x%x is neither RSA nor ECC", uint16(pub.Type))
	}
	return nil
}
