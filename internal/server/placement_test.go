package server_test

import (
	"crypto/sha256"
	"net/http"
	"slices"
	"testing"

	"trustpool/internal/agent/bootsim"
	"trustpool/internal/evidence"
	"trustpool/internal/nova"
	"trustpool/internal/nova/placementtest"
	"trustpool/internal/server"
)

// TestPlacementTraitFollowsVerdicts runs the whole chain against Debian's
// real Placement service: agents on swtpm are attested, and Placement's
// allocation candidates for required=CUSTOM_TRUSTED_HOST are exactly the
// trusted hosts, before and after one of them turns untrusted.
func TestPlacementTraitFollowsVerdicts(t *testing.T) {
	needSWTPM(t)
	pl := placementtest.Start(t)
	rp := map[string]string{}
	for _, h := range []string{"node1", "node2", "node3"} {
		rp[h] = pl.CreateProvider(t, h)
	}
	e := startServerWith(t, func(c *server.Config) {
		c.Placement = &nova.TraitSyncConfig{Endpoint: pl.URL, Token: pl.Token}
	})
	n1 := startNode(t, e, "node1", bootsim.Profile{Launch: true})
	startNode(t, e, "node2", bootsim.Profile{Launch: true})
	startNode(t, e, "node3", bootsim.Profile{Launch: true, Tampered: true})
	if code, body := e.call("POST", "/v1/golden", map[string]string{"host": "node1"}); code != http.StatusOK {
		t.Fatalf("golden import: %d %s", code, body)
	}
	trusted := func(hosts ...string) []string {
		var uuids []string
		for _, h := range hosts {
			uuids = append(uuids, rp[h])
		}
		slices.Sort(uuids)
		return uuids
	}
	query := "resources=VCPU:1&required=" + nova.DefaultTrait
	waitFor(t, "node1 and node2 as the only trusted candidates", func() bool {
		return slices.Equal(pl.Candidates(t, query), trusted("node1", "node2"))
	})
	sum := sha256.Sum256([]byte("rootkit"))
	if err := n1.tpm.Extend(9, map[evidence.Bank][]byte{evidence.SHA256: sum[:]}); err != nil {
		t.Fatal(err)
	}
	e.attest("node1")
	waitFor(t, "node2 as the only trusted candidate", func() bool {
		return slices.Equal(pl.Candidates(t, query), trusted("node2"))
	})
	if got := pl.Candidates(t, "resources=VCPU:1&required=!"+nova.DefaultTrait); !slices.Equal(got, trusted("node1", "node3")) {
		t.Fatalf("forbidden trait candidates %v, want node1 and node3", got)
	}
}
