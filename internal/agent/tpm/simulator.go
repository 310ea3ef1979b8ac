package tpm

import (
	"errors"
	"sync/atomic"
)

// ErrSimulatorInUse is returned by Open("simulator") while another simulator
// is open in this process.
var ErrSimulatorInUse = errors.New("the in-process TPM simulator is already open (one per process)")

// ErrNoSimulator is returned by Open("simulator") in a binary built without
// cgo: the simulator is C code.
var ErrNoSimulator = errors.New("the in-process TPM simulator needs a binary built with cgo")

// simulatorOpen is true while this package holds the simulator. The Microsoft
// simulator is C code with process-wide state, and go-tpm-tools serializes it
// with a package lock that makes a second simulator.Get() block until the
// first is closed; this flag turns that silent deadlock into an error. It is
// the one package-level variable here because the resource it guards is
// process-wide too.
var simulatorOpen atomic.Bool
