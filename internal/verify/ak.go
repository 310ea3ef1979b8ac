package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	_ "crypto/sha256" // registers crypto.SHA256
	_ "crypto/sha512" // registers crypto.SHA384
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"trustpool/internal/wire"
)

// Bounds on AK parameters. RSA keys above 4096 bits are refused so that a
// hostile enrollment cannot make every verification slow.
const (
	minRSABits  = 2048
	maxRSABits  = 4096
	maxECCBytes = 48 // P-384
	maxPublic   = 1024
)

// AK is a node's attestation key as accepted at enrollment: a restricted
// signing key that only signs structures the TPM itself generated. It is
// immutable and safe for concurrent use.
type AK struct {
	public []byte
	name   []byte
	// qualifiedName is the qualifiedSigner a quote by this key carries.
	qualifiedName []byte
	key           crypto.PublicKey // *rsa.PublicKey or *ecdsa.PublicKey
	scheme        uint16           // algRSASSA, algRSAPSS or algECDSA
	hashAlg       uint16           // the scheme's hash, as a TPM_ALG_ID
	hash          crypto.Hash
}

// ParseAK decodes a TPMT_PUBLIC (the contents of a TPM2B_PUBLIC) and accepts
// it only as an attestation key: a restricted signing key (sign, restricted,
// fixedTPM, fixedParent and sensitiveDataOrigin set, decrypt clear) with
// nameAlg sha256 or sha384, and either RSA of 2048 to 4096 bits with an
// RSASSA or RSAPSS scheme, or ECC P-256/P-384 with ECDSA; the scheme's hash
// is sha256 or sha384. Restricted means the TPM refuses to sign data that
// starts with TPM_GENERATED_VALUE unless it made the data itself, which is
// what makes a quote's contents trustworthy.
func ParseAK(public []byte) (*AK, error) {
	ak, err := parseAK(public)
	if err != nil {
		return nil, fmt.Errorf("parse AK: %w", err)
	}
	return ak, nil
}

func parseAK(public []byte) (*AK, error) {
	if len(public) > maxPublic {
		return nil, fmt.Errorf("TPMT_PUBLIC is %d bytes, limit %d", len(public), maxPublic)
	}
	r := wire.BigEndian(public)
	typ := r.U16()
	nameAlg := r.U16()
	attrs := r.U32()
	r.Sized16(64) // authPolicy: how the key may be used, not what it signs
	if r.Err() != nil {
		return nil, fmt.Errorf("TPMT_PUBLIC: %w", r.Err())
	}
	nameHash, ok := hashForAlg(nameAlg)
	if !ok {
		return nil, fmt.Errorf("nameAlg 0x%04x, want sha256 or sha384", nameAlg)
	}
	const want = attrSign | attrRestricted | attrFixedTPM | attrFixedParent | attrSensitiveDataOrigin
	if attrs&want != want {
		return nil, fmt.Errorf("attributes 0x%08x lack %s: not a restricted signing key that never left its TPM", attrs, attrNames(want&^attrs))
	}
	if attrs&attrDecrypt != 0 {
		return nil, fmt.Errorf("attributes 0x%08x include decrypt: an AK must only sign", attrs)
	}

	ak := &AK{public: bytes.Clone(public)}
	var err error
	switch typ {
	case algRSA:
		err = parseRSA(&r, ak)
	case algECC:
		err = parseECC(&r, ak)
	default:
		return nil, fmt.Errorf("key type 0x%04x, want RSA or ECC", typ)
	}
	if err != nil {
		return nil, err
	}
	if err := r.End(); err != nil {
		return nil, fmt.Errorf("TPMT_PUBLIC: %w", err)
	}

	// Name = nameAlg || H(TPMT_PUBLIC). A primary key in the owner hierarchy
	// has the qualified name nameAlg || H(TPM_RH_OWNER || Name) (Part 1,
	// section 16: the parent of a primary is its hierarchy).
	h := nameHash.New()
	h.Write(public)
	ak.name = h.Sum(binary.BigEndian.AppendUint16(nil, nameAlg))
	h.Reset()
	h.Write(binary.BigEndian.AppendUint32(nil, rhOwner))
	h.Write(ak.name)
	ak.qualifiedName = h.Sum(binary.BigEndian.AppendUint16(nil, nameAlg))
	return ak, nil
}

// parseSigScheme reads the key's symmetric definition (which must be NULL
// for a signing key) and its signing scheme, returning scheme and hash.
func parseSigScheme(r *wire.Reader, ak *AK, allowed ...uint16) error {
	sym := r.U16()
	scheme := r.U16()
	if r.Err() != nil {
		return fmt.Errorf("TPMT_PUBLIC parameters: %w", r.Err())
	}
	if sym != algNull {
		return fmt.Errorf("symmetric algorithm 0x%04x, want NULL for a signing key", sym)
	}
	ok := false
	for _, a := range allowed {
		ok = ok || scheme == a
	}
	if !ok {
		return fmt.Errorf("signing scheme 0x%04x not allowed for this key type", scheme)
	}
	hashAlg := r.U16()
	if r.Err() != nil {
		return fmt.Errorf("TPMT_PUBLIC scheme: %w", r.Err())
	}
	hash, ok := hashForAlg(hashAlg)
	if !ok {
		return fmt.Errorf("scheme hash 0x%04x, want sha256 or sha384", hashAlg)
	}
	ak.scheme, ak.hashAlg, ak.hash = scheme, hashAlg, hash
	return nil
}

func parseRSA(r *wire.Reader, ak *AK) error {
	if err := parseSigScheme(r, ak, algRSASSA, algRSAPSS); err != nil {
		return err
	}
	bits := int(r.U16())
	exp := r.U32()
	n := r.Sized16(maxRSABits / 8)
	if r.Err() != nil {
		return fmt.Errorf("TPMS_RSA_PARMS: %w", r.Err())
	}
	if bits < minRSABits || bits > maxRSABits || bits%8 != 0 {
		return fmt.Errorf("RSA key of %d bits, want %d to %d", bits, minRSABits, maxRSABits)
	}
	if len(n) != bits/8 || n[0]&0x80 == 0 {
		return fmt.Errorf("RSA modulus is not %d bits", bits)
	}
	if exp == 0 {
		exp = 65537 // the TPM's default exponent
	}
	if exp < 3 || exp%2 == 0 || exp > 1<<31-1 {
		return fmt.Errorf("RSA exponent %d", exp)
	}
	ak.key = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp)}
	return nil
}

func parseECC(r *wire.Reader, ak *AK) error {
	if err := parseSigScheme(r, ak, algECDSA); err != nil {
		return err
	}
	curveID := r.U16()
	kdf := r.U16()
	x := r.Sized16(maxECCBytes)
	y := r.Sized16(maxECCBytes)
	if r.Err() != nil {
		return fmt.Errorf("TPMS_ECC_PARMS: %w", r.Err())
	}
	if kdf != algNull {
		return fmt.Errorf("ECC KDF 0x%04x, want NULL for a signing key", kdf)
	}
	var curve elliptic.Curve
	switch curveID {
	case eccNISTP256:
		curve = elliptic.P256()
	case eccNISTP384:
		curve = elliptic.P384()
	default:
		return fmt.Errorf("ECC curve 0x%04x, want NIST P-256 or P-384", curveID)
	}
	size := (curve.Params().BitSize + 7) / 8
	if len(x) > size || len(y) > size {
		return errors.New("ECC point coordinates longer than the curve")
	}
	// Uncompressed point: 0x04 || X || Y, coordinates left-padded.
	pt := make([]byte, 1+2*size)
	pt[0] = 4
	copy(pt[1+size-len(x):1+size], x)
	copy(pt[1+2*size-len(y):], y)
	key, err := ecdsa.ParseUncompressedPublicKey(curve, pt)
	if err != nil {
		return fmt.Errorf("ECC public point: %w", err)
	}
	ak.key = key
	return nil
}

// hashForAlg maps the TPM hash algorithms an AK may use to crypto.Hash.
func hashForAlg(alg uint16) (crypto.Hash, bool) {
	switch alg {
	case algSHA256:
		return crypto.SHA256, true
	case algSHA384:
		return crypto.SHA384, true
	}
	return 0, false
}

func attrNames(bits uint32) string {
	var names []string
	for _, a := range []struct {
		bit  uint32
		name string
	}{
		{attrFixedTPM, "fixedTPM"}, {attrFixedParent, "fixedParent"},
		{attrSensitiveDataOrigin, "sensitiveDataOrigin"}, {attrRestricted, "restricted"}, {attrSign, "sign"},
	} {
		if bits&a.bit != 0 {
			names = append(names, a.name)
		}
	}
	return fmt.Sprint(names)
}

// Name returns the AK's TPM name (the contents of a TPM2B_NAME): nameAlg
// (2 bytes) || H_nameAlg(TPMT_PUBLIC). Credential activation binds to it.
func (ak *AK) Name() []byte { return bytes.Clone(ak.name) }

// QualifiedName returns the qualified name quotes by this AK carry as
// qualifiedSigner: the AK is a primary key of the owner hierarchy.
func (ak *AK) QualifiedName() []byte { return bytes.Clone(ak.qualifiedName) }

// Public returns the TPMT_PUBLIC bytes the AK was parsed from.
func (ak *AK) Public() []byte { return bytes.Clone(ak.public) }

// Is reports whether public is this key's TPMT_PUBLIC, byte for byte.
func (ak *AK) Is(public []byte) bool { return bytes.Equal(ak.public, public) }

// PublicKey returns the AK's public key: *rsa.PublicKey or *ecdsa.PublicKey.
func (ak *AK) PublicKey() crypto.PublicKey { return ak.key }
