//go:build !cgo

package tpm

import (
	"errors"

	"github.com/google/go-tpm/tpm2/transport"
)

// openSimulator fails: the simulator is C code and this binary was built
// without cgo.
func openSimulator() (transport.TPMCloser, error) {
	return nil, errors.New("the TPM simulator needs a binary built with cgo")
}
