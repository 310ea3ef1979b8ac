// Package bootsimtest gives a test a simulated compute node's TPM: a real
// swtpm (started and stopped with the test; missing swtpm skips, or fails
// under CI=true) after a simulated measured boot.
package bootsimtest

import (
	"testing"

	"trustpool/internal/agent/bootsim"
	"trustpool/internal/agent/swtpm/swtpmtest"
	"trustpool/internal/agent/tpm"
)

// Boot starts swtpm, performs the measured boot of prof on it (an Intel TXT
// launch through swtpm's control channel when prof.Launch is set) and
// returns the open TPM, closed when the test ends, and the boot's event logs.
func Boot(t testing.TB, prof bootsim.Profile) (*tpm.TPM, bootsim.Logs) {
	t.Helper()
	p := swtpmtest.Start(t, "")
	tp, err := tpm.Open(p.Addr())
	if err != nil {
		t.Fatalf("open swtpm: %v", err)
	}
	t.Cleanup(func() { tp.Close() })
	logs, err := bootsim.Boot(tp, p, prof)
	if err != nil {
		t.Fatalf("simulated boot: %v", err)
	}
	return tp, logs
}
