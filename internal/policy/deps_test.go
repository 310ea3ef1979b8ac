package policy_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPureDependencies keeps policy and the UEFI decoders it reads events
// with pure, as internal/verify's test does for verify and eventlog: no
// networking, SQL, TPM access code or cgo.
func TestPureDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	forbidden := []string{"net/http", "database/sql", "os/exec", "runtime/cgo", "github.com/google/go-tpm", "github.com/google/go-attestation"}
	for _, pkg := range []string{"trustpool/internal/policy", "trustpool/internal/uefi"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, f := range forbidden {
				if dep == f || strings.HasPrefix(dep, f+"/") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
