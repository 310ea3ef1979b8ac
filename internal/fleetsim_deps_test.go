package internal_test

import (
	"testing"
)

// TestFleetsimUsers holds fleetsim's package doc: the simulated attesters
// are test equipment, linked by tests, test kits and the bench command
// only (cmd/trustpool links it through internal/bench), never by the
// server, the agent or anything they are built from.
func TestFleetsimUsers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	allowed := []string{"trustpool/internal/fleetsim", "trustpool/internal/bench", "trustpool/cmd/trustpool"}
	for _, p := range listPackages(t) {
		if matches(p.path, allowed) || testKit(p.path) {
			continue
		}
		for _, dep := range p.deps {
			if matches(dep, []string{"trustpool/internal/fleetsim"}) {
				t.Errorf("production package %s links the test equipment %s", p.path, dep)
			}
		}
	}
}
