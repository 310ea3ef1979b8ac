// Package fleetsim is test equipment: a software "TPM" whose attestation
// key makes TPMS_ATTEST quotes and TPMT_SIGNATUREs byte for byte as a TPM
// does, and simulated nodes that boot with realistic event logs. It lets
// tests, the demo's checks and `trustpool bench` run thousands of attesters
// without a TPM. Nothing here is secure: keys live in process memory, and no
// code on a production path (server, agent, verification) may use it (the
// dependency test in internal/deps_test.go holds that). Tests reach it
// through verify/verifytest, which re-exports it.
package fleetsim

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
)

// Alg selects a SoftAK's key type and signing scheme.
type Alg int

// The AK kinds a SoftAK can be. All use nameAlg and scheme hash sha256.
const (
	RSA2048    Alg = iota // RSA-2048, RSASSA-PKCS1-v1_5 (the common TPM AK)
	RSA2048PSS            // RSA-2048, RSASSA-PSS
	P256                  // NIST P-256, ECDSA
)

func (a Alg) String() string {
	switch a {
	case RSA2048:
		return "RSA-2048"
	case RSA2048PSS:
		return "RSA-2048-PSS"
	case P256:
		return "P-256"
	}
	return fmt.Sprintf("Alg(%d)", int(a))
}

// TPM 2.0 constants used to write structures.
const (
	algRSA        = 0x0001
	algSHA256     = 0x000B
	algNull       = 0x0010
	algRSASSA     = 0x0014
	algRSAPSS     = 0x0016
	algECDSA      = 0x0018
	algECC        = 0x0023
	eccNISTP256   = 0x0003
	rhOwner       = 0x40000001
	attrFixedTPM  = 1 << 1
	attrFixedPar  = 1 << 4
	attrSensData  = 1 << 5
	attrUserAuth  = 1 << 6
	attrRestrict  = 1 << 16
	attrDecrypt   = 1 << 17
	attrSign      = 1 << 18
	akAttributes  = attrFixedTPM | attrFixedPar | attrSensData | attrUserAuth | attrRestrict | attrSign
	tpmGenerated  = 0xff544347
	stAttestQuote = 0x8018
)

// Attributes are the TPMA_OBJECT bits of a SoftAK's public area; tests
// building refused keys combine them with Template.
const (
	AttrFixedTPM            uint32 = attrFixedTPM
	AttrFixedParent         uint32 = attrFixedPar
	AttrSensitiveDataOrigin uint32 = attrSensData
	AttrRestricted          uint32 = attrRestrict
	AttrDecrypt             uint32 = attrDecrypt
	AttrSign                uint32 = attrSign
	// AKAttributes are those of a TPM attestation key.
	AKAttributes uint32 = akAttributes
)

// SoftAK is a software attestation key: a primary key of the owner
// hierarchy, as trustpool's agent makes it, but held in memory. It is safe
// for concurrent use.
type SoftAK struct {
	alg    Alg
	signer crypto.Signer
	public []byte
	name   []byte
	qname  []byte
	clock  atomic.Uint64
}

// NewSoftAK makes a fresh key of the given kind.
func NewSoftAK(alg Alg) (*SoftAK, error) {
	var (
		signer crypto.Signer
		err    error
	)
	switch alg {
	case RSA2048, RSA2048PSS:
		signer, err = rsa.GenerateKey(rand.Reader, 2048)
	case P256:
		signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("new soft AK: unknown kind %v", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("new soft AK: %w", err)
	}
	return NewSoftAKWith(alg, signer)
}

// NewSoftAKWith makes a key of the given kind from an existing private key
// (*rsa.PrivateKey of 2048 bits for RSA2048 and RSA2048PSS, *ecdsa.PrivateKey
// on P-256 for P256): a key pool saves the generation time of large fleets.
func NewSoftAKWith(alg Alg, signer crypto.Signer) (*SoftAK, error) {
	switch key := signer.(type) {
	case *rsa.PrivateKey:
		if (alg != RSA2048 && alg != RSA2048PSS) || key.N.BitLen() != 2048 {
			return nil, fmt.Errorf("new soft AK: an RSA-%d key is not a %v key", key.N.BitLen(), alg)
		}
	case *ecdsa.PrivateKey:
		if alg != P256 || key.Curve != elliptic.P256() {
			return nil, fmt.Errorf("new soft AK: an ECDSA key is not a %v key", alg)
		}
	default:
		return nil, fmt.Errorf("new soft AK: unsupported key %T", signer)
	}
	k := &SoftAK{alg: alg, signer: signer}
	k.public = Template(signer.Public(), k.scheme(), akAttributes)
	k.name = Name(k.public)
	k.qname = QualifiedName(k.name)
	k.clock.Store(1_000_000)
	return k, nil
}

func (k *SoftAK) scheme() uint16 {
	switch k.alg {
	case RSA2048PSS:
		return algRSAPSS
	case P256:
		return algECDSA
	}
	return algRSASSA
}

// Template writes the TPMT_PUBLIC of a signing key with the given public
// key (*rsa.PublicKey or *ecdsa.PublicKey on P-256), scheme (TPM_ALG_RSASSA,
// TPM_ALG_RSAPSS or TPM_ALG_ECDSA, each with sha256) and attributes, with
// nameAlg sha256 and an empty authPolicy, as TPM2_CreatePrimary returns it.
// Tests use it to make keys ParseAK must refuse.
func Template(pub crypto.PublicKey, scheme uint16, attrs uint32) []byte {
	var b []byte
	switch key := pub.(type) {
	case *rsa.PublicKey:
		b = be16(b, algRSA)
		b = be16(b, algSHA256)
		b = be32(b, attrs)
		b = be16(b, 0)       // authPolicy
		b = be16(b, algNull) // symmetric
		b = be16(b, scheme)
		if scheme != algNull {
			b = be16(b, algSHA256)
		}
		b = be16(b, uint16(key.N.BitLen()))
		e := uint32(key.E)
		if e == 65537 {
			e = 0 // the TPM writes the default exponent as 0
		}
		b = be32(b, e)
		b = tpm2b(b, key.N.Bytes())
	case *ecdsa.PublicKey:
		b = be16(b, algECC)
		b = be16(b, algSHA256)
		b = be32(b, attrs)
		b = be16(b, 0)       // authPolicy
		b = be16(b, algNull) // symmetric
		b = be16(b, scheme)
		if scheme != algNull {
			b = be16(b, algSHA256)
		}
		b = be16(b, eccNISTP256)
		b = be16(b, algNull)   // kdf
		pt, err := key.Bytes() // 0x04 || X || Y
		if err != nil {
			panic(fmt.Sprintf("fleetsim: P-256 key: %v", err))
		}
		b = tpm2b(b, pt[1:33])
		b = tpm2b(b, pt[33:65])
	}
	return b
}

// Name is a TPM object's name: nameAlg (sha256) || SHA-256(TPMT_PUBLIC).
func Name(public []byte) []byte {
	h := sha256.Sum256(public)
	return append([]byte{0, algSHA256}, h[:]...)
}

// QualifiedName is the qualified name of a primary key of the owner
// hierarchy with the given name: nameAlg || SHA-256(TPM_RH_OWNER || name).
func QualifiedName(name []byte) []byte {
	h := sha256.New()
	h.Write(be32(nil, rhOwner))
	h.Write(name)
	return h.Sum([]byte{0, algSHA256})
}

// Public returns the key's TPMT_PUBLIC bytes, as enrollment sends them.
func (k *SoftAK) Public() []byte { return bytes.Clone(k.public) }

// Name returns the key's TPM name.
func (k *SoftAK) Name() []byte { return bytes.Clone(k.name) }

// Signer returns the private key, for tests that sign something a TPM never would.
func (k *SoftAK) Signer() crypto.Signer { return k.signer }

// Sign returns the TPMT_SIGNATURE a TPM makes over attest with this key.
// A real restricted key refuses to sign a TPM_GENERATED_VALUE structure it
// did not make; Sign does not, so tests can make signed but bogus quotes.
func (k *SoftAK) Sign(attest []byte) ([]byte, error) {
	digest := sha256.Sum256(attest)
	switch k.alg {
	case RSA2048, RSA2048PSS:
		var opts crypto.SignerOpts = crypto.SHA256
		if k.alg == RSA2048PSS {
			// The reference TPM uses a salt as long as the digest.
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
		}
		sig, err := k.signer.Sign(rand.Reader, digest[:], opts)
		if err != nil {
			return nil, fmt.Errorf("sign quote: %w", err)
		}
		b := be16(nil, k.scheme())
		b = be16(b, algSHA256)
		return tpm2b(b, sig), nil
	case P256:
		r, s, err := ecdsa.Sign(rand.Reader, k.signer.(*ecdsa.PrivateKey), digest[:])
		if err != nil {
			return nil, fmt.Errorf("sign quote: %w", err)
		}
		b := be16(nil, algECDSA)
		b = be16(b, algSHA256)
		b = tpm2b(b, r.FillBytes(make([]byte, 32)))
		return tpm2b(b, s.FillBytes(make([]byte, 32))), nil
	}
	return nil, errors.New("sign quote: unknown key kind")
}

// Attest is a TPMS_ATTEST of a quote, field by field. Tests change fields to
// make quotes a TPM would never sign.
type Attest struct {
	Magic           uint32
	Type            uint16
	QualifiedSigner []byte
	ExtraData       []byte
	Clock           uint64
	ResetCount      uint32
	RestartCount    uint32
	Safe            bool
	FirmwareVersion uint64
	Selection       []evidence.Selection
	PCRDigest       []byte
}

// FirmwareVersion is the firmware version SoftAK quotes report.
const FirmwareVersion = 0x0001_0002_0003_0004

// NewAttest returns the TPMS_ATTEST a TPM with this key makes for a quote of
// the given PCR values: the digest is over the values of sel, banks in the
// order of sel and PCRs ascending. Every selected PCR must be in pcrs.
func (k *SoftAK) NewAttest(nonce []byte, sel []evidence.Selection, pcrs []evidence.PCR) (Attest, error) {
	h := sha256.New()
	norm := make([]evidence.Selection, len(sel))
	for i, s := range sel {
		ps := slices.Clone(s.PCRs)
		slices.Sort(ps)
		norm[i] = evidence.Selection{Bank: s.Bank, PCRs: ps}
		for _, p := range ps {
			j := slices.IndexFunc(pcrs, func(v evidence.PCR) bool { return v.Bank == s.Bank && v.Index == p })
			if j < 0 {
				return Attest{}, fmt.Errorf("quote: no value for PCR %d (%s)", p, s.Bank)
			}
			h.Write(pcrs[j].Digest)
		}
	}
	return Attest{
		Magic:           tpmGenerated,
		Type:            stAttestQuote,
		QualifiedSigner: bytes.Clone(k.qname),
		ExtraData:       bytes.Clone(nonce),
		Clock:           k.clock.Add(17),
		ResetCount:      3,
		RestartCount:    0,
		Safe:            true,
		FirmwareVersion: FirmwareVersion,
		Selection:       norm,
		PCRDigest:       h.Sum(nil),
	}, nil
}

// Quote makes a quote as TPM2_Quote does: the TPMS_ATTEST bytes and their
// TPMT_SIGNATURE.
func (k *SoftAK) Quote(nonce []byte, sel []evidence.Selection, pcrs []evidence.PCR) (attest, sig []byte, err error) {
	a, err := k.NewAttest(nonce, sel, pcrs)
	if err != nil {
		return nil, nil, err
	}
	attest = a.Marshal()
	sig, err = k.Sign(attest)
	return attest, sig, err
}

// Marshal writes the TPMS_ATTEST in the TPM's wire format.
func (a Attest) Marshal() []byte {
	b := be32(nil, a.Magic)
	b = be16(b, a.Type)
	b = tpm2b(b, a.QualifiedSigner)
	b = tpm2b(b, a.ExtraData)
	b = be64(b, a.Clock)
	b = be32(b, a.ResetCount)
	b = be32(b, a.RestartCount)
	if a.Safe {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = be64(b, a.FirmwareVersion)
	b = be32(b, uint32(len(a.Selection)))
	for _, s := range a.Selection {
		b = be16(b, s.Bank.AlgID())
		var bits [3]byte
		for _, p := range s.PCRs {
			if p >= 0 && p < 24 {
				bits[p/8] |= 1 << (p % 8)
			}
		}
		b = append(b, 3)
		b = append(b, bits[:]...)
	}
	return tpm2b(b, a.PCRDigest)
}

func be16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func be32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func be64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func tpm2b(b, v []byte) []byte       { return append(be16(b, uint16(len(v))), v...) }

// Node is a simulated attester: an AK and the event logs of its last boot.
// Its PCRs are whatever the logs replay to, as on a real TPM after boot.
// Fields may be changed between calls to simulate a reboot.
type Node struct {
	AK *SoftAK
	// EventLog is the SRTM (firmware) log; DRTMLog, if set, that of a TXT
	// launch, which puts PCRs 17-22 at zero before its events.
	EventLog []byte
	DRTMLog  []byte
	// Selection is what the node quotes when asked for the default.
	Selection []evidence.Selection
}

// DefaultSelection is sha256 PCRs 0-7: firmware, option ROMs, boot loader
// and Secure Boot policy.
func DefaultSelection() []evidence.Selection {
	return []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}}}
}

// NewNode makes a node with a fresh AK of the given kind that booted with
// BootLog(host), quoting DefaultSelection.
func NewNode(alg Alg, host string) (*Node, error) {
	ak, err := NewSoftAK(alg)
	if err != nil {
		return nil, err
	}
	return &Node{AK: ak, EventLog: BootLog(host).Bytes(), Selection: DefaultSelection()}, nil
}

// PCRs returns the node's PCR values in bank b: the replay of its logs.
func (n *Node) PCRs(b evidence.Bank) ([evidence.NumPCRs][]byte, error) {
	var vals [evidence.NumPCRs][]byte
	if len(n.EventLog) == 0 {
		for i := range vals {
			vals[i] = make([]byte, b.Size())
			if i >= 17 && i <= 22 {
				vals[i] = bytes.Repeat([]byte{0xff}, b.Size())
			}
		}
	} else {
		l, err := eventlog.Parse(n.EventLog)
		if err != nil {
			return vals, fmt.Errorf("node PCRs: %w", err)
		}
		if vals, err = tpmValues(l, b); err != nil {
			return vals, fmt.Errorf("node PCRs: %w", err)
		}
	}
	if len(n.DRTMLog) > 0 {
		l, err := eventlog.Parse(n.DRTMLog)
		if err != nil {
			return vals, fmt.Errorf("node PCRs: DRTM log: %w", err)
		}
		drtm, _, err := l.Replay(b, true)
		if err != nil {
			return vals, fmt.Errorf("node PCRs: DRTM log: %w", err)
		}
		copy(vals[17:23], drtm[17:23])
	}
	return vals, nil
}

// tpmValues are the values a TPM holds in bank b after the boot that log l
// records. An event without a digest in b was not extended in b (Windows
// extends its sha256-only events into the sha256 bank alone). A log with no
// digests in b at all (a SHA-1 format log) stands for firmware that extended
// every bank but logged sha1 only: each event's data hashed in b.
func tpmValues(l *eventlog.Log, b evidence.Bank) ([evidence.NumPCRs][]byte, error) {
	if slices.Contains(l.Banks, b) {
		r, err := l.ReplayBank(b, false)
		return r.Values, err
	}
	var vals [evidence.NumPCRs][]byte
	for i := range vals {
		vals[i] = make([]byte, b.Size())
		if i >= 17 && i <= 22 {
			vals[i] = bytes.Repeat([]byte{0xff}, b.Size())
		}
	}
	for _, e := range l.Events {
		if e.Type == eventlog.EvNoAction || e.PCR < 0 || e.PCR >= evidence.NumPCRs {
			continue
		}
		vals[e.PCR] = eventlog.Extend(b, vals[e.PCR], digestOf(b, string(e.Data)))
	}
	return vals, nil
}

// Evidence answers a challenge for the node's default selection.
func (n *Node) Evidence(nonce []byte) (*evidence.Evidence, error) {
	return n.EvidenceFor(nonce, n.Selection)
}

// EvidenceFor answers a challenge as the trust agent does: it quotes sel,
// reports the values of the selected PCRs and attaches the logs.
func (n *Node) EvidenceFor(nonce []byte, sel []evidence.Selection) (*evidence.Evidence, error) {
	var pcrs []evidence.PCR
	for _, s := range sel {
		vals, err := n.PCRs(s.Bank)
		if err != nil {
			return nil, err
		}
		for _, p := range s.PCRs {
			if p < 0 || p >= evidence.NumPCRs {
				return nil, fmt.Errorf("evidence: PCR %d out of range", p)
			}
			pcrs = append(pcrs, evidence.PCR{Bank: s.Bank, Index: p, Digest: vals[p]})
		}
	}
	quote, sig, err := n.AK.Quote(nonce, sel, pcrs)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	return &evidence.Evidence{
		Quote: quote, Signature: sig, PCRs: pcrs,
		EventLog: bytes.Clone(n.EventLog), DRTMLog: bytes.Clone(n.DRTMLog),
	}, nil
}

// BootLog returns the log of a realistic UEFI measured boot of 50 events
// over PCRs 0-9 and 14, in sha1 and sha256, like the firmware logs of the
// servers trustpool attests. host names the machine: it changes only
// host-specific measurements (the SMBIOS tables and the GPT), so nodes of one
// model share their firmware and boot chain digests, as a real fleet does.
func BootLog(host string) *eventlog.Builder {
	b := eventlog.NewBuilder(evidence.SHA1, evidence.SHA256)
	image := func(pcr int, typ uint32, name string) {
		// Firmware logs an image's Authenticode hash, not a hash of the
		// event data; here a hash of the name stands in for it.
		var ds []eventlog.Digest
		for _, bank := range b.Banks() {
			ds = append(ds, eventlog.Digest{Bank: bank, Value: digestOf(bank, "image:"+name)})
		}
		b.AddDigests(pcr, typ, ds, []byte(name))
	}
	b.Add(0, eventlog.EvNoAction, []byte("StartupLocality\x00\x00"))
	b.Add(0, eventlog.EvSCRTMVersion, []byte("V\x00e\x00n\x00d\x00o\x00r\x00 \x001\x00.\x002\x00\x00\x00"))
	image(0, eventlog.EvEFIPlatformFirmware, "PEI firmware volume")
	image(0, eventlog.EvEFIPlatformFirmware, "DXE firmware volume")
	image(0, eventlog.EvPostCode, "ACPI DATA")
	b.Add(1, eventlog.EvEFIHandoffTables, []byte("SMBIOS tables of "+host))
	b.Add(1, eventlog.EvPlatformConfigFlags, []byte("platform config"))
	for _, v := range []string{"BootOrder", "Boot0000", "Boot0001", "Boot0002"} {
		b.Add(1, eventlog.EvEFIVariableBoot, []byte("8be4df61-93ca-11d2-aa0d-00e098032b8c "+v))
	}
	b.Add(1, eventlog.EvEFIVariableDriverConf, []byte("Setup"))
	for i := range 4 {
		image(2, eventlog.EvEFIBootServicesDriver, fmt.Sprintf("option ROM %d", i))
	}
	b.Add(3, eventlog.EvEFIVariableDriverConf, []byte("option ROM configuration"))
	for _, v := range []string{"SecureBoot", "PK", "KEK", "db", "dbx"} {
		b.Add(7, eventlog.EvEFIVariableDriverConf, []byte("8be4df61-93ca-11d2-aa0d-00e098032b8c "+v))
	}
	for pcr := range 8 {
		b.Add(pcr, eventlog.EvSeparator, []byte{0, 0, 0, 0})
	}
	b.Add(4, eventlog.EvEFIAction, []byte("Calling EFI Application from Boot Option"))
	b.Add(5, eventlog.EvEFIGPTEvent, []byte("GPT of "+host))
	image(4, eventlog.EvEFIBootServicesApp, "shimx64.efi")
	b.Add(7, eventlog.EvEFIVariableAuthority, []byte("db: Microsoft UEFI CA 2011"))
	b.Add(14, eventlog.EvIPL, []byte("MokList"))
	b.Add(14, eventlog.EvIPL, []byte("MokListX"))
	image(4, eventlog.EvEFIBootServicesApp, "grubx64.efi")
	b.Add(7, eventlog.EvEFIVariableAuthority, []byte("shim: vendor certificate"))
	for _, cmd := range []string{"set root=hd0,gpt2", "search --fs-uuid", "linux /vmlinuz-6.1.0-28-amd64 root=/dev/sda2 ro", "initrd /initrd.img-6.1.0-28-amd64"} {
		b.Add(8, eventlog.EvIPL, []byte("grub_cmd: "+cmd))
	}
	b.Add(8, eventlog.EvIPL, []byte("kernel_cmdline: /vmlinuz-6.1.0-28-amd64 root=/dev/sda2 ro"))
	image(9, eventlog.EvIPL, "/boot/vmlinuz-6.1.0-28-amd64")
	image(9, eventlog.EvIPL, "/boot/initrd.img-6.1.0-28-amd64")
	image(9, eventlog.EvIPL, "/boot/grub/grub.cfg")
	b.Add(5, eventlog.EvEFIAction, []byte("Exit Boot Services Invocation"))
	b.Add(5, eventlog.EvEFIAction, []byte("Exit Boot Services Returned with Success"))
	for i := range 3 {
		b.Add(1, eventlog.EvEFIVariableBoot, []byte(fmt.Sprintf("runtime variable %d", i)))
	}
	return b
}

func digestOf(b evidence.Bank, s string) []byte {
	if b == evidence.SHA1 {
		h := sha1.Sum([]byte(s))
		return h[:]
	}
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// DRTMLog returns the log of an Intel TXT launch: SINIT and policy in PCR
// 17, the MLE (tboot and a hypervisor) in PCR 18, host data in PCR 19.
func DRTMLog(hypervisor string) *eventlog.Builder {
	b := eventlog.NewBuilder(evidence.SHA1, evidence.SHA256)
	b.Add(17, eventlog.EvTXTHashStart, []byte("SINIT ACM"))
	b.Add(17, eventlog.EvTXTBIOSACRegData, []byte("BIOS ACM registers"))
	b.Add(17, eventlog.EvTXTSinitPubKeyHash, []byte("SINIT public key"))
	b.Add(17, eventlog.EvTXTLCPControlHash, []byte("launch control policy"))
	b.Add(17, eventlog.EvTXTMLEHash, []byte("tboot 1.11"))
	b.Add(18, eventlog.EvTXTMLEHash, []byte("tboot 1.11"))
	b.Add(18, eventlog.EvTXTCapValue, []byte{0xff})
	b.Add(18, eventlog.EvIPL, []byte(hypervisor))
	b.Add(19, eventlog.EvIPL, []byte("initrd of "+hypervisor))
	return b
}

// WindowsBootLog returns BootLog(host) followed by what Windows and Hyper-V
// hosts add: Windows boot manager events on PCRs 11-14 that carry a sha256
// digest only (in this sha1+sha256 log, so PCRs 11-14 cannot be replayed in
// sha1) and an EV_NO_ACTION event on PCR 0xFFFFFFFF. The first sha256-only
// event is WindowsFirstPartial.
func WindowsBootLog(host string) *eventlog.Builder {
	b := BootLog(host)
	for i, pcr := range []int{12, 13, 11, 12, 14} {
		data := fmt.Sprintf("Windows Boot Manager measurement %d of %s", i, host)
		b.AddDigests(pcr, eventlog.EvEventTag, []eventlog.Digest{{Bank: evidence.SHA256, Value: digestOf(evidence.SHA256, data)}}, []byte(data))
	}
	b.AddDigests(0xffffffff, eventlog.EvNoAction, nil, []byte("Hyper-V log end"))
	return b
}

// WindowsFirstPartial is the index of WindowsBootLog's first sha256-only
// event (on PCR 12).
var WindowsFirstPartial = BootLog("").Len()

// SHA1BootLog returns the events of BootLog(host) in a SHA-1 format log
// (TCG_PCR_EVENT records, no Spec ID header), as some firmware writes on TPM
// 2.0 hosts. A Node with this log holds in its other banks the hash of each
// event's data (see Node.PCRs).
func SHA1BootLog(host string) *eventlog.Builder {
	l, err := eventlog.Parse(BootLog(host).Bytes())
	if err != nil {
		panic("fleetsim: BootLog does not parse: " + err.Error())
	}
	b := eventlog.NewSHA1Builder()
	for _, e := range l.Events {
		b.AddDigests(e.PCR, e.Type, e.Digests, e.Data)
	}
	return b
}
