//go:build !cgo

package tpm

import (
	"github.com/google/go-tpm/tpm2/transport"
)

// openSimulator fails: the simulator is C code and this binary was built
// without cgo.
func openSimulator() (transport.TPMCloser, error) {
	return nil, ErrNoSimulator
}
