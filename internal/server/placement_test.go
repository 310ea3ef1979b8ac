package server_test

import (
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"trustpool/internal/agent/bootsim"
	"trustpool/internal/evidence"
	"trustpool/internal/notify"
	"trustpool/internal/nova"
	"trustpool/internal/nova/placementtest"
	"trustpool/internal/server"
	"trustpool/internal/verdict"
)

// providers returns the resource providers of hosts (rp maps a host to
// its provider's UUID), sorted as Placement's candidates are compared.
func providers(rp map[string]string, hosts ...string) []string {
	var uuids []string
	for _, h := range hosts {
		uuids = append(uuids, rp[h])
	}
	slices.Sort(uuids)
	return uuids
}

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
	e.golden("node1")
	trusted := func(hosts ...string) []string { return providers(rp, hosts...) }
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

// TestExpiryRemovesTraitAndNotifies: a verdict that expires (nothing
// attests the host again) is a transition like any other: the trait goes
// from the real Placement and the webhook
// receiver has the trusted → unknown notification, with no reconcile
// (the reconcile interval is an hour).
func TestExpiryRemovesTraitAndNotifies(t *testing.T) {
	needSWTPM(t)
	pl := placementtest.Start(t)
	rp := pl.CreateProvider(t, "node1")
	hooks := make(chan notify.Payload, 16)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p notify.Payload
		if err := json.NewDecoder(r.Body).Decode(&p); err == nil {
			hooks <- p
		}
	}))
	t.Cleanup(receiver.Close)
	const validity = 8 * time.Second
	e := startServerWith(t, func(c *server.Config) {
		c.Placement = &nova.TraitSyncConfig{Endpoint: pl.URL, Token: pl.Token, Interval: time.Hour} // no reconcile during the test
		c.Webhooks = &notify.Config{Targets: []string{receiver.URL}}
		c.Integrity.Validity = validity
	})
	startNode(t, e, "node1", bootsim.Profile{Launch: true})
	e.golden("node1")
	v := e.attest("node1")
	query := "resources=VCPU:1&required=" + nova.DefaultTrait
	waitFor(t, "node1 trusted in Placement", func() bool { return slices.Equal(pl.Candidates(t, query), []string{rp}) })
	expiry, err := time.Parse(time.RFC3339, v.Expiry)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node1's trait removed at expiry", func() bool { return len(pl.Candidates(t, query)) == 0 })
	removed := time.Now()
	for {
		select {
		case p := <-hooks:
			if p.TrustLvl != verdict.Unknown {
				continue // the transitions before
			}
			if p.Previous != verdict.Trusted || p.Host != "node1" || len(p.Reasons) == 0 || p.Reasons[0].Code != verdict.CodeExpired {
				t.Fatalf("notification %+v, want node1 trusted → unknown (%s)", p, verdict.CodeExpired)
			}
			// Not asserted (timing is for benchmarks): how late the trait
			// went, to a second (RFC 3339 keeps seconds).
			t.Logf("trait removed %v after the expiry", removed.Sub(expiry).Round(100*time.Millisecond))
		case <-time.After(30 * time.Second):
			t.Fatal("no webhook for the expiry")
		}
		break
	}
	// Deleting a trusted host is a transition too.
	e.attest("node1")
	waitFor(t, "node1 trusted again", func() bool { return slices.Equal(pl.Candidates(t, query), []string{rp}) })
	if code, body := e.call("DELETE", "/v1/hosts/node1", nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, body)
	}
	waitFor(t, "node1's trait removed at deletion", func() bool { return len(pl.Candidates(t, query)) == 0 })
	for {
		select {
		case p := <-hooks:
			if p.TrustLvl != verdict.Unknown || len(p.Reasons) == 0 || p.Reasons[0].Code != verdict.CodeDeleted {
				continue
			}
			if p.Previous != verdict.Trusted {
				t.Fatalf("deletion notification %+v, want trusted → unknown", p)
			}
			return
		case <-time.After(30 * time.Second):
			t.Fatal("no webhook for the deletion")
		}
	}
}
