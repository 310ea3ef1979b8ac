// Package swtpmtest starts a real swtpm for a test and stops it when the
// test ends. Tests that need swtpm or another external program skip when it
// is missing, except under CI (CI=true), where a missing program fails the
// test: CI must exercise the real TPM.
package swtpmtest

import (
	"os"
	"os/exec"
	"testing"

	"trustpool/internal/agent/swtpm"
)

// Start runs swtpm on loopback with its state in stateDir (a new temporary
// directory when empty) and stops it in t.Cleanup.
func Start(t testing.TB, stateDir string) *swtpm.Process {
	t.Helper()
	RequireBinary(t, swtpm.Binary)
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	p, err := swtpm.Start(t.Context(), swtpm.Config{StateDir: stateDir, Log: testLog{t}})
	if err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stop swtpm: %v", err)
		}
	})
	return p
}

// RequireBinary skips the test when name is not on PATH, or fails it when
// the environment variable CI is "true".
func RequireBinary(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI: %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
}

// testLog writes swtpm's output to the test log.
type testLog struct{ t testing.TB }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Logf("swtpm: %s", b)
	return len(b), nil
}
