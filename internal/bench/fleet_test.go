package bench

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"trustpool/internal/fleetsim"
)

// TestFleet is the fleet check: a real server process and 200 simulated
// nodes for about two intervals of 5 s, two of them rebooting into a
// tampered hypervisor. It asserts correctness only (every node enrolled
// and fresh, each at the level it booted), never timings.
func TestFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process and 200 simulated nodes")
	}
	exe := filepath.Join(t.TempDir(), "trustpool")
	if out, err := exec.Command("go", "build", "-o", exe, "trustpool/cmd/trustpool").CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("build the trustpool binary: %v\n%s", err, out)
		}
		t.Skipf("cannot build the trustpool binary: %v\n%s", err, out)
	}
	res, err := RunFleet(t.Context(), FleetConfig{
		Nodes: 200, Interval: 5 * time.Second, Duration: 12 * time.Second, Tampered: 2,
		AK: fleetsim.P256, Exe: exe, Dir: t.TempDir(), Workers: 8,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", *res)
	if res.Enrolled != 200 {
		t.Errorf("enrolled %d of 200 nodes (%v)", res.Enrolled, res.Notes)
	}
	if res.UnknownAtEnd != 0 || res.FreshAtEnd != 200 {
		t.Errorf("at the end %d hosts are unknown and %d fresh, want 0 and 200", res.UnknownAtEnd, res.FreshAtEnd)
	}
	if res.UntrustedAtEnd != 2 || res.WrongAtEnd != 0 {
		t.Errorf("at the end %d hosts are untrusted and %d not at the level they booted, want the 2 tampered ones and 0", res.UntrustedAtEnd, res.WrongAtEnd)
	}
	if res.TamperToUntrusted.N != 2 || res.TamperMissed != 0 {
		t.Errorf("PollHosts said untrusted for %d of the 2 tampered nodes after their hello", res.TamperToUntrusted.N)
	}
	if res.Attestations < 200 || res.ChallengesRefused != 0 {
		t.Errorf("the fleet answered %d challenges and refused %d, want at least one per node and none refused", res.Attestations, res.ChallengesRefused)
	}
}
