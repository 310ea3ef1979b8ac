// Package tpm gives the trust agent the few TPM 2.0 operations it needs:
// the endorsement key (EK) and its certificate, a restricted signing
// attestation key (AK), quotes, PCR reads and extends, and credential
// activation for enrollment.
//
// One concrete type, TPM, talks to three backends that differ only in how
// command bytes reach the TPM (see Open): the kernel's resource manager,
// swtpm's TCP data channel, and the in-process Microsoft reference simulator.
//
// Nothing here verifies anything: the agent is the attester, and every byte
// it produces (quotes, PCR values, public areas) is checked by the server
// against the AK the server admitted at enrollment. What this package trusts
// is the TPM itself, reached over a local channel.
package tpm

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// SimulatorAddr is the address that opens the in-process simulator.
const SimulatorAddr = "simulator"

// SwtpmScheme prefixes the address of swtpm's TCP data channel.
const SwtpmScheme = "swtpm://"

// ErrClosed is returned by every method called after Close.
var ErrClosed = errors.New("tpm: closed")

// TPM is an open connection to one TPM. Its methods are safe for concurrent
// use; they are serialized because a TPM executes one command at a time.
type TPM struct {
	addr string

	// mu guards every field below and every use of tpm: a command and its
	// response must not interleave with another goroutine's.
	mu  sync.Mutex
	tpm transport.TPMCloser // nil after Close
	ek  *key                // created on first use, flushed on Close
	ak  *key                // created on first use, flushed on Close
}

// key is a loaded transient object.
type key struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	public []byte // TPMT_PUBLIC exactly as the TPM returned it
}

// Open opens a TPM by address:
//
//   - a path such as "/dev/tpmrm0": the kernel's resource manager (production).
//     Use the resource manager, not /dev/tpm0: other programs share the TPM.
//   - "swtpm://127.0.0.1:PORT": swtpm's TCP data channel. swtpm serves one
//     data connection at a time, so a second Open waits in its accept queue
//     until the first is closed.
//   - "simulator": the in-process Microsoft reference simulator (needs cgo).
//     Only one simulator can exist per process; while one is open, a second
//     Open fails with ErrSimulatorInUse instead of blocking. Every Open of the
//     simulator gets a freshly manufactured TPM, so its EK and AK differ from
//     one Open to the next, and its locality is fixed at 0 (PCRs 17-22 can't
//     be extended).
//
// Open does not send TPM2_Startup: the kernel, swtpm's startup-clear flag and
// the simulator have already done so.
func Open(addr string) (*TPM, error) {
	var (
		tr  transport.TPMCloser
		err error
	)
	switch {
	case addr == SimulatorAddr:
		tr, err = openSimulator()
	case strings.HasPrefix(addr, SwtpmScheme):
		tr, err = dialSwtpm(strings.TrimPrefix(addr, SwtpmScheme))
	case strings.HasPrefix(addr, "/"):
		tr, err = linuxtpm.Open(addr)
	default:
		return nil, fmt.Errorf("open TPM %q: unknown address (want a device path, %s or %shost:port)", addr, SimulatorAddr, SwtpmScheme)
	}
	if err != nil {
		return nil, fmt.Errorf("open TPM %q: %w", addr, err)
	}
	return &TPM{addr: addr, tpm: tr}, nil
}

// Close flushes the EK and AK from the TPM's memory and closes the
// connection. The keys are not lost: they are primaries that the next Open
// re-creates identically.
func (t *TPM) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return ErrClosed
	}
	var errs []error
	for _, k := range []*key{t.ak, t.ek} {
		if k == nil {
			continue
		}
		if _, err := (tpm2.FlushContext{FlushHandle: k.handle}).Execute(t.tpm); err != nil {
			errs = append(errs, fmt.Errorf("flush handle 0x%x: %w", uint32(k.handle), err))
		}
	}
	if err := t.tpm.Close(); err != nil {
		errs = append(errs, err)
	}
	t.tpm, t.ek, t.ak = nil, nil, nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close TPM %q: %w", t.addr, err)
	}
	return nil
}

// locked runs f with the TPM's lock held, or fails with ErrClosed.
func (t *TPM) locked(op string, f func(tr transport.TPM) error) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tpm == nil {
		return fmt.Errorf("%s: %w", op, ErrClosed)
	}
	if err := f(t.tpm); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}
