package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// Bounds on the server's credential blobs. A TPMS_ID_OBJECT holds an HMAC
// and an encrypted digest (at most 2+64 bytes each); an encrypted seed is one
// RSA or ECC ciphertext (512 bytes for RSA-4096). The bounds reject garbage
// before it is framed into a TPM command.
const (
	maxIDObject     = 1 << 10
	maxEncSecret    = 1 << 10
	credentialNonce = 16
)

// ActivateCredential recovers the secret that the server sealed to this
// TPM's EK and AK name with TPM2_MakeCredential (or its software equivalent):
// idObject is the TPM2B_ID_OBJECT's contents (the credential blob) and
// encSecret the TPM2B_ENCRYPTED_SECRET's contents. The TPM releases the
// secret only if it holds the EK and a loaded object whose name matches the
// one the server used, which proves to the server that the AK lives in the
// same TPM as the EK.
//
// The EK's policy is TPM2_PolicySecret(TPM_RH_ENDORSEMENT), satisfied here
// with the endorsement hierarchy's empty authValue.
func (t *TPM) ActivateCredential(idObject, encSecret []byte) ([]byte, error) {
	var secret []byte
	err := t.locked("activate credential", func(tr transport.TPM) error {
		if len(idObject) == 0 || len(idObject) > maxIDObject {
			return fmt.Errorf("credential blob is %d bytes, want 1 to %d", len(idObject), maxIDObject)
		}
		if len(encSecret) == 0 || len(encSecret) > maxEncSecret {
			return fmt.Errorf("encrypted secret is %d bytes, want 1 to %d", len(encSecret), maxEncSecret)
		}
		ek, err := t.loadEK(tr)
		if err != nil {
			return err
		}
		ak, err := t.loadAK(tr)
		if err != nil {
			return err
		}
		rsp, err := tpm2.ActivateCredential{
			ActivateHandle: tpm2.NamedHandle{Handle: ak.handle, Name: ak.name},
			KeyHandle: tpm2.AuthHandle{
				Handle: ek.handle,
				Name:   ek.name,
				Auth:   tpm2.Policy(tpm2.TPMAlgSHA256, credentialNonce, endorsementSecret),
			},
			CredentialBlob: tpm2.TPM2BIDObject{Buffer: idObject},
			Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encSecret},
		}.Execute(tr)
		if err != nil {
			return err
		}
		secret = rsp.CertInfo.Buffer
		return nil
	})
	if err != nil {
		return nil, err
	}
	return secret, nil
}

// endorsementSecret satisfies the TCG default EK policy in a policy session.
func endorsementSecret(tr transport.TPM, session tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
	_, err := tpm2.PolicySecret{
		AuthHandle:    tpm2.TPMRHEndorsement,
		PolicySession: session,
		NonceTPM:      nonceTPM,
	}.Execute(tr)
	if err != nil {
		return fmt.Errorf("PolicySecret(endorsement): %w", err)
	}
	return nil
}
