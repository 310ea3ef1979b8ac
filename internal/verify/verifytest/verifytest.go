// Package verifytest is the software TPM and simulated nodes of package
// fleetsim under the name tests have always used: a software attestation key
// that quotes byte for byte as a TPM does, and nodes that boot with
// realistic event logs. Only tests import it; production code that needs
// simulated attesters (`trustpool bench`) imports fleetsim, which says it is
// test equipment.
package verifytest

import (
	"crypto"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/fleetsim"
)

// Alg selects a SoftAK's key type and signing scheme.
type Alg = fleetsim.Alg

// The AK kinds a SoftAK can be.
const (
	RSA2048    = fleetsim.RSA2048
	RSA2048PSS = fleetsim.RSA2048PSS
	P256       = fleetsim.P256
)

// The TPMA_OBJECT bits of a SoftAK's public area.
const (
	AttrFixedTPM            = fleetsim.AttrFixedTPM
	AttrFixedParent         = fleetsim.AttrFixedParent
	AttrSensitiveDataOrigin = fleetsim.AttrSensitiveDataOrigin
	AttrRestricted          = fleetsim.AttrRestricted
	AttrDecrypt             = fleetsim.AttrDecrypt
	AttrSign                = fleetsim.AttrSign
	AKAttributes            = fleetsim.AKAttributes
)

// FirmwareVersion is the firmware version SoftAK quotes carry.
const FirmwareVersion = fleetsim.FirmwareVersion

// SoftAK, Attest and Node: see package fleetsim.
type (
	SoftAK = fleetsim.SoftAK
	Attest = fleetsim.Attest
	Node   = fleetsim.Node
)

// WindowsFirstPartial is fleetsim.WindowsFirstPartial.
var WindowsFirstPartial = fleetsim.WindowsFirstPartial

// NewSoftAK is fleetsim.NewSoftAK.
func NewSoftAK(alg Alg) (*SoftAK, error) { return fleetsim.NewSoftAK(alg) }

// NewNode is fleetsim.NewNode.
func NewNode(alg Alg, host string) (*Node, error) { return fleetsim.NewNode(alg, host) }

// Template is fleetsim.Template.
func Template(pub crypto.PublicKey, scheme uint16, attrs uint32) []byte {
	return fleetsim.Template(pub, scheme, attrs)
}

// Name is fleetsim.Name.
func Name(public []byte) []byte { return fleetsim.Name(public) }

// QualifiedName is fleetsim.QualifiedName.
func QualifiedName(name []byte) []byte { return fleetsim.QualifiedName(name) }

// DefaultSelection is fleetsim.DefaultSelection.
func DefaultSelection() []evidence.Selection { return fleetsim.DefaultSelection() }

// BootLog is fleetsim.BootLog.
func BootLog(host string) *eventlog.Builder { return fleetsim.BootLog(host) }

// DRTMLog is fleetsim.DRTMLog.
func DRTMLog(hypervisor string) *eventlog.Builder { return fleetsim.DRTMLog(hypervisor) }

// WindowsBootLog is fleetsim.WindowsBootLog.
func WindowsBootLog(host string) *eventlog.Builder { return fleetsim.WindowsBootLog(host) }

// SHA1BootLog is fleetsim.SHA1BootLog.
func SHA1BootLog(host string) *eventlog.Builder { return fleetsim.SHA1BootLog(host) }
