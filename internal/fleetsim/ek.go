package fleetsim

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// TPM 2.0 constants of the TCG default EK template (EK Credential Profile
// 2.0, template L-1: RSA-2048, AES-128-CFB, sha256 name).
const (
	algAES         = 0x0006
	algCFB         = 0x0043
	attrAdminPol   = 1 << 7
	ekAttributes   = attrFixedTPM | attrFixedPar | attrSensData | attrAdminPol | attrRestrict | attrDecrypt
	labelIdentity  = "IDENTITY"
	labelIntegrity = "INTEGRITY"
	labelStorage   = "STORAGE"
	ekSymBits      = 128
)

// ekPolicy is the template's authPolicy: TPM2_PolicySecret(TPM_RH_ENDORSEMENT).
var ekPolicy = []byte{
	0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC, 0x8D, 0x46, 0xA5, 0xD7, 0x24,
	0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52, 0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA,
}

// SoftEK is a software endorsement key: an RSA-2048 key whose public area
// is the TCG default EK template, with the private key in process memory.
// It performs TPM2_ActivateCredential as a TPM does. It is safe for
// concurrent use.
type SoftEK struct {
	key    *rsa.PrivateKey
	public []byte
}

// NewSoftEK makes an EK with a fresh RSA-2048 key.
func NewSoftEK() (*SoftEK, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("new soft EK: %w", err)
	}
	return NewSoftEKWith(key)
}

// NewSoftEKWith makes an EK of an existing RSA-2048 key (a key pool saves
// the generation time of large fleets).
func NewSoftEKWith(key *rsa.PrivateKey) (*SoftEK, error) {
	if key.N.BitLen() != 2048 {
		return nil, fmt.Errorf("new soft EK: RSA key of %d bits, want 2048", key.N.BitLen())
	}
	return &SoftEK{key: key, public: EKTemplate(&key.PublicKey)}, nil
}

// EKTemplate writes the TPMT_PUBLIC of an EK made from the TCG default RSA
// template with the given public key, as TPM2_CreatePrimary returns it.
func EKTemplate(pub *rsa.PublicKey) []byte {
	b := be16(nil, algRSA)
	b = be16(b, algSHA256)
	b = be32(b, ekAttributes)
	b = tpm2b(b, ekPolicy)
	b = be16(b, algAES) // symmetric: AES-128-CFB
	b = be16(b, ekSymBits)
	b = be16(b, algCFB)
	b = be16(b, algNull) // scheme
	b = be16(b, uint16(pub.N.BitLen()))
	e := uint32(pub.E)
	if e == 65537 {
		e = 0
	}
	b = be32(b, e)
	return tpm2b(b, pub.N.FillBytes(make([]byte, 256)))
}

// Public returns the EK's TPMT_PUBLIC bytes, as enrollment sends them.
func (k *SoftEK) Public() []byte { return bytes.Clone(k.public) }

// ActivateCredential recovers the credential that TPM2_MakeCredential (on
// the server: go-tpm's tpm2.CreateCredential) sealed to this EK and the
// object named akName, as TPM2_ActivateCredential does (TPM 2.0 Part 1,
// "Credential Protection"): decrypt the seed with RSA-OAEP-SHA256 and the
// label "IDENTITY", derive the HMAC key (KDFa "INTEGRITY") and check the
// integrity HMAC over encIdentity || name, derive the AES key (KDFa
// "STORAGE" with the name as context) and decrypt the TPM2B_DIGEST
// credential with AES-128-CFB and a zero IV. idObject is the contents of the
// TPM2B_ID_OBJECT, encSecret those of the TPM2B_ENCRYPTED_SECRET.
func (k *SoftEK) ActivateCredential(akName, idObject, encSecret []byte) ([]byte, error) {
	seed, err := rsa.DecryptOAEP(sha256.New(), nil, k.key, encSecret, []byte(labelIdentity+"\x00"))
	if err != nil {
		return nil, fmt.Errorf("activate credential: decrypt seed: %w", err)
	}
	if len(idObject) < 2 {
		return nil, errors.New("activate credential: short ID object")
	}
	n := int(binary.BigEndian.Uint16(idObject))
	if n != sha256.Size || len(idObject) < 2+n+2 {
		return nil, errors.New("activate credential: malformed ID object")
	}
	integrity, encIdentity := idObject[2:2+n], idObject[2+n:]
	mac := hmac.New(sha256.New, KDFa(seed, labelIntegrity, nil, nil, sha256.Size*8))
	mac.Write(encIdentity)
	mac.Write(akName)
	if !hmac.Equal(mac.Sum(nil), integrity) {
		return nil, errors.New("activate credential: integrity check failed (credential not made for this EK and name)")
	}
	block, err := aes.NewCipher(KDFa(seed, labelStorage, akName, nil, ekSymBits))
	if err != nil {
		return nil, fmt.Errorf("activate credential: %w", err)
	}
	plain := make([]byte, len(encIdentity))
	//lint:ignore SA1019 TPM credential protection is AES-CFB; integrity comes from the HMAC checked above.
	cipher.NewCFBDecrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(plain, encIdentity)
	m := int(binary.BigEndian.Uint16(plain))
	if m != len(plain)-2 {
		return nil, errors.New("activate credential: malformed credential")
	}
	return plain[2:], nil
}

// KDFa is TPM 2.0's key derivation function with HMAC-SHA256 (Part 1,
// 11.4.10.2): counter-mode HMAC over counter || label || 0x00 || contextU ||
// contextV || bits, truncated to bits.
func KDFa(key []byte, label string, contextU, contextV []byte, bits int) []byte {
	mac := hmac.New(sha256.New, key)
	size := (bits + 7) / 8
	var out []byte
	for counter := uint32(1); len(out) < size; counter++ {
		mac.Reset()
		mac.Write(be32(nil, counter))
		mac.Write([]byte(label))
		mac.Write([]byte{0})
		mac.Write(contextU)
		mac.Write(contextV)
		mac.Write(be32(nil, uint32(bits)))
		out = mac.Sum(out)
	}
	out = out[:size]
	if r := bits % 8; r != 0 {
		out[0] &= 1<<r - 1
	}
	return out
}
