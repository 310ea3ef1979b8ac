// Package bootsim performs a simulated measured boot on a software TPM, so a
// demo or test node looks like a real compute node: firmware, boot loader and
// hypervisor are extended into their PCRs and recorded in a TCG event log
// that replays to them. On swtpm it can also emulate an Intel TXT measured
// launch (PCR 17 through the dynamic-launch hash sequence, tboot and the
// hypervisor into PCR 18 at locality 3), with a DRTM event log.
//
// Nothing here is trusted by the server: a simulated node is attested exactly
// like a real one.
package bootsim

import (
	"fmt"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
)

// TPM is what a simulated boot needs from the node's TPM.
type TPM interface {
	Banks() ([]evidence.Bank, error)
	Extend(pcr int, digests map[evidence.Bank][]byte) error
}

// Launcher emulates the hardware side of an Intel TXT launch (swtpm's
// control channel): the dynamic-launch hash sequence that resets PCRs 17–22
// and extends PCR 17, and the locality the MLE then runs at.
type Launcher interface {
	HashStart() error
	HashData(b []byte) error
	HashEnd() error
	SetLocality(loc uint8) error
}

// Profile says what the node boots.
type Profile struct {
	// Hypervisor names the hypervisor image; a tampered node boots another.
	Hypervisor string
	// Tampered boots a modified hypervisor.
	Tampered bool
	// Launch performs an Intel TXT measured launch (needs a Launcher).
	Launch bool
}

// DefaultHypervisor is the image a clean demo node boots.
const DefaultHypervisor = "kvm-6.1.0-28-amd64"

// Logs are the event logs a boot leaves behind.
type Logs struct {
	SRTM []byte // PCRs 0–9
	DRTM []byte // PCRs 17–18, empty without a measured launch
}

// Boot measures p's boot chain into t and returns the event logs. l may be
// nil when p.Launch is false.
func Boot(t TPM, l Launcher, p Profile) (Logs, error) {
	banks, err := t.Banks()
	if err != nil {
		return Logs{}, fmt.Errorf("simulated boot: %w", err)
	}
	if p.Hypervisor == "" {
		p.Hypervisor = DefaultHypervisor
	}
	hv := "hypervisor " + p.Hypervisor
	if p.Tampered {
		hv += " (patched: backdoor)"
	}
	srtm := eventlog.NewBuilder(banks...)
	m := measurer{t: t, b: srtm}
	m.add(0, eventlog.EvSCRTMVersion, "trustpool-sim S-CRTM 2.3.1")
	m.add(0, eventlog.EvEFIPlatformFirmware, "firmware volume trustpool-sim UEFI 2.3.1")
	m.add(1, eventlog.EvEFIHandoffTables, "SMBIOS trustpool-sim board rev B")
	m.add(7, eventlog.EvEFIVariableDriverConf, "SecureBoot=1")
	m.add(7, eventlog.EvEFIVariableDriverConf, "PK trustpool-sim platform key")
	m.add(7, eventlog.EvEFIVariableDriverConf, "db trustpool-sim signature database")
	for pcr := 0; pcr <= 7; pcr++ {
		m.add(pcr, eventlog.EvSeparator, "\x00\x00\x00\x00")
	}
	m.add(5, eventlog.EvEFIGPTEvent, "GPT disk trustpool-sim 3 partitions")
	m.add(4, eventlog.EvEFIAction, "Calling EFI Application from Boot Option")
	m.add(4, eventlog.EvEFIBootServicesApp, "shimx64.efi 15.8")
	m.add(4, eventlog.EvEFIBootServicesApp, "grubx64.efi 2.06")
	m.add(8, eventlog.EvIPL, "grub_cmd: linux /boot/vmlinuz root=/dev/sda2 intel_iommu=on")
	if !p.Launch {
		// Without TXT the boot loader measures the hypervisor itself.
		m.add(4, eventlog.EvEFIBootServicesApp, hv)
		m.add(9, eventlog.EvIPL, "kernel "+hv)
	} else {
		m.add(9, eventlog.EvIPL, "tboot 1.11.1 multiboot module")
	}
	if m.err != nil {
		return Logs{}, m.err
	}
	logs := Logs{SRTM: srtm.Bytes()}
	if !p.Launch {
		return logs, nil
	}
	if l == nil {
		return Logs{}, fmt.Errorf("simulated boot: a measured launch needs swtpm's control channel")
	}
	drtm, err := launch(t, l, banks, hv)
	if err != nil {
		return Logs{}, err
	}
	logs.DRTM = drtm
	return logs, nil
}

// sinit is what the CPU measures at GETSEC[SENTER]: the SINIT ACM.
const sinit = "SINIT ACM trustpool-sim 5th gen, LCP policy v3"

func launch(t TPM, l Launcher, banks []evidence.Bank, hv string) ([]byte, error) {
	for _, step := range []func() error{l.HashStart, func() error { return l.HashData([]byte(sinit)) }, l.HashEnd} {
		if err := step(); err != nil {
			return nil, fmt.Errorf("simulated TXT launch: %w", err)
		}
	}
	drtm := eventlog.NewBuilder(banks...)
	// The hash sequence extended PCR 17 itself: record it, don't extend again.
	drtm.Add(17, eventlog.EvTXTHashStart, []byte(sinit))
	if err := l.SetLocality(3); err != nil {
		return nil, fmt.Errorf("simulated TXT launch: %w", err)
	}
	m := measurer{t: t, b: drtm}
	m.add(17, eventlog.EvTXTLCPHash, "LCP trustpool-sim platform owner policy")
	m.add(18, eventlog.EvTXTMLEHash, "tboot 1.11.1 MLE")
	m.add(18, eventlog.EvTXTCombinedHash, hv)
	if m.err != nil {
		return nil, m.err
	}
	if err := l.SetLocality(0); err != nil {
		return nil, fmt.Errorf("simulated TXT launch: %w", err)
	}
	return drtm.Bytes(), nil
}

// measurer records an event and extends the TPM with the same digests.
type measurer struct {
	t   TPM
	b   *eventlog.Builder
	err error
}

func (m *measurer) add(pcr int, typ uint32, data string) {
	if m.err != nil {
		return
	}
	ev := m.b.Add(pcr, typ, []byte(data))
	digests := make(map[evidence.Bank][]byte, len(ev.Digests))
	for _, d := range ev.Digests {
		digests[d.Bank] = d.Value
	}
	if err := m.t.Extend(pcr, digests); err != nil {
		m.err = fmt.Errorf("simulated boot: extend PCR %d: %w", pcr, err)
	}
}
