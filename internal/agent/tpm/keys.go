package tpm

import (
	"crypto"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// ekCertIndex is the NV index of the RSA-2048 EK certificate (TCG EK
// Credential Profile, "low range").
const ekCertIndex = tpm2.TPMHandle(0x01c00002)

// maxEKCert bounds the EK certificate we read; real ones are about 1 KiB.
const maxEKCert = 8 << 10

// akTemplate is the public template of the attestation key: a restricted
// RSA-2048 signing key (RSASSA with SHA-256, nameAlg SHA-256) that can sign
// only TPM-generated data, such as quotes, and never decrypts.
//
// The AK is a primary key in the owner hierarchy, so it is never stored: a
// TPM derives a primary from its hierarchy seed and the template, and gives
// the same key for the same template until the owner hierarchy is cleared.
// That is how the AK is kept across agent and host restarts without a key
// blob on disk. Clearing the TPM changes the AK, and the node must enroll
// again.
func akTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgRSA,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			Restricted:          true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTRSAScheme{
				Scheme: tpm2.TPMAlgRSASSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA,
					&tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
	}
}

// EK returns the TPMT_PUBLIC of the standard RSA-2048 endorsement key (the
// TCG default EK template, tpm2.RSAEKTemplate) and the EK certificate (DER)
// from NV index 0x01c00002, or a nil cert when the TPM has none. The cert is
// returned as stored: the server checks its chain and that it certifies this
// public key.
func (t *TPM) EK() (public []byte, cert []byte, err error) {
	err = t.locked("read EK", func(tr transport.TPM) error {
		ek, err := t.loadEK(tr)
		if err != nil {
			return err
		}
		public = ek.public
		cert, err = readEKCert(tr)
		return err
	})
	return public, cert, err
}

// EKPublicKey returns the EK's public key (an *rsa.PublicKey).
func (t *TPM) EKPublicKey() (crypto.PublicKey, error) {
	var key crypto.PublicKey
	err := t.locked("read EK public key", func(tr transport.TPM) error {
		ek, err := t.loadEK(tr)
		if err != nil {
			return err
		}
		pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ek.public)
		if err != nil {
			return fmt.Errorf("decode EK public area: %w", err)
		}
		key, err = tpm2.Pub(*pub)
		return err
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}

// AK returns the TPMT_PUBLIC of the attestation key: a restricted RSA-2048
// signing key (RSASSA, SHA-256) in the owner hierarchy. It is a primary key,
// re-created identically from the same template on every Open, so it stays
// the same across agent and host restarts until the TPM is cleared.
func (t *TPM) AK() (public []byte, err error) {
	err = t.locked("read AK", func(tr transport.TPM) error {
		ak, err := t.loadAK(tr)
		if err != nil {
			return err
		}
		public = ak.public
		return nil
	})
	return public, err
}

// loadEK creates the EK once per connection. Called with t.mu held.
func (t *TPM) loadEK(tr transport.TPM) (*key, error) {
	if t.ek == nil {
		k, err := createPrimary(tr, tpm2.TPMRHEndorsement, tpm2.RSAEKTemplate)
		if err != nil {
			return nil, fmt.Errorf("create EK: %w", err)
		}
		t.ek = k
	}
	return t.ek, nil
}

// loadAK creates the AK once per connection. Called with t.mu held.
func (t *TPM) loadAK(tr transport.TPM) (*key, error) {
	if t.ak == nil {
		k, err := createPrimary(tr, tpm2.TPMRHOwner, akTemplate())
		if err != nil {
			return nil, fmt.Errorf("create AK: %w", err)
		}
		t.ak = k
	}
	return t.ak, nil
}

// createPrimary creates a primary key in a hierarchy whose authValue is
// empty, as it is on a TPM that no one has taken ownership of with a password
// (what trustpool expects: the agent never sets hierarchy passwords).
func createPrimary(tr transport.TPM, hierarchy tpm2.TPMHandle, template tpm2.TPMTPublic) (*key, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: hierarchy,
		InPublic:      tpm2.New2B(template),
	}.Execute(tr)
	if err != nil {
		return nil, err
	}
	return &key{handle: rsp.ObjectHandle, name: rsp.Name, public: rsp.OutPublic.Bytes()}, nil
}

// readEKCert reads the RSA EK certificate, or returns nil if the index is
// not defined. The index is read with its own (empty) authValue when it
// allows AUTHREAD, which works even when the owner has set a password.
func readEKCert(tr transport.TPM) ([]byte, error) {
	pub, err := tpm2.NVReadPublic{NVIndex: ekCertIndex}.Execute(tr)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read EK certificate index: %w", err)
	}
	nv, err := pub.NVPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("decode EK certificate index: %w", err)
	}
	size := int(nv.DataSize)
	if size > maxEKCert {
		return nil, fmt.Errorf("EK certificate index holds %d bytes, limit %d", size, maxEKCert)
	}
	auth := tpm2.AuthHandle{Handle: ekCertIndex, Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)}
	if !nv.Attributes.AuthRead {
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	}
	chunk, err := nvBufferMax(tr)
	if err != nil {
		return nil, err
	}
	cert := make([]byte, 0, size)
	for len(cert) < size {
		n := min(chunk, size-len(cert))
		rsp, err := tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: ekCertIndex, Name: pub.NVName},
			Size:       uint16(n),
			Offset:     uint16(len(cert)),
		}.Execute(tr)
		if err != nil {
			return nil, fmt.Errorf("read EK certificate at offset %d: %w", len(cert), err)
		}
		if len(rsp.Data.Buffer) == 0 {
			return nil, fmt.Errorf("read EK certificate at offset %d: TPM returned no data", len(cert))
		}
		cert = append(cert, rsp.Data.Buffer...)
	}
	return cert[:size], nil
}

// nvBufferMax is the most bytes one TPM2_NV_Read may return.
func nvBufferMax(tr transport.TPM) (int, error) {
	rsp, err := tpm2.GetCapability{
		Capability:    tpm2.TPMCapTPMProperties,
		Property:      uint32(tpm2.TPMPTNVBufferMax),
		PropertyCount: 1,
	}.Execute(tr)
	if err != nil {
		return 0, fmt.Errorf("read TPM_PT_NV_BUFFER_MAX: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return 0, fmt.Errorf("decode TPM properties: %w", err)
	}
	for _, p := range props.TPMProperty {
		if p.Property == tpm2.TPMPTNVBufferMax && p.Value > 0 {
			return int(min(p.Value, 1024)), nil
		}
	}
	// The TPM 2.0 PC Client profile requires at least 512.
	return 512, nil
}
