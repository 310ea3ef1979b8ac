//go:build cgo

package tpm

import (
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/simulator"
)

// openSimulator starts the in-process simulator, powered on and started up.
func openSimulator() (transport.TPMCloser, error) {
	if !simulatorOpen.CompareAndSwap(false, true) {
		return nil, ErrSimulatorInUse
	}
	sim, err := simulator.OpenSimulator()
	if err != nil {
		simulatorOpen.Store(false)
		return nil, err
	}
	return &releasingSimulator{TPMCloser: sim}, nil
}

// releasingSimulator frees simulatorOpen when the simulator is closed.
type releasingSimulator struct {
	transport.TPMCloser
}

func (s *releasingSimulator) Close() error {
	defer simulatorOpen.Store(false)
	return s.TPMCloser.Close()
}
