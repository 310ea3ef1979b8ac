package tpm_test

import (
	"bytes"
	"testing"

	"trustpool/internal/agent/swtpm"
	"trustpool/internal/agent/swtpm/swtpmtest"
	"trustpool/internal/agent/tpm"
)

func openSwtpm(t *testing.T, p *swtpm.Process) *tpm.TPM {
	t.Helper()
	tp, err := tpm.Open(p.Addr())
	if err != nil {
		t.Fatalf("Open(%s): %v", p.Addr(), err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

func TestSwtpm(t *testing.T) {
	p := swtpmtest.Start(t, "")
	testBackend(t, openSwtpm(t, p))
}

// identity returns the EK and AK public areas of the TPM at p, then closes
// the connection.
func identity(t *testing.T, p *swtpm.Process) (ek, ak []byte) {
	t.Helper()
	tp, err := tpm.Open(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tp.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	ek, cert, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	if cert != nil {
		t.Errorf("a fresh swtpm has an EK certificate of %d bytes", len(cert))
	}
	ak, err = tp.AK()
	if err != nil {
		t.Fatal(err)
	}
	return ek, ak
}

// TestSwtpmIdentityStable checks that the EK and AK, both primary keys,
// survive Close/Open and a restart of swtpm on the same state directory,
// and that another TPM has other keys.
func TestSwtpmIdentityStable(t *testing.T) {
	dir := t.TempDir()
	first := swtpmtest.Start(t, dir)
	ek, ak := identity(t, first)

	check := func(name string, p *swtpm.Process, same bool) {
		t.Run(name, func(t *testing.T) {
			ek2, ak2 := identity(t, p)
			if bytes.Equal(ek, ek2) != same || bytes.Equal(ak, ak2) != same {
				t.Errorf("EK same: %v, AK same: %v; want %v", bytes.Equal(ek, ek2), bytes.Equal(ak, ak2), same)
			}
		})
	}
	check("reopen", first, true)
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	check("restart on the same state", swtpmtest.Start(t, dir), true)
	check("another TPM", swtpmtest.Start(t, ""), false)
}
