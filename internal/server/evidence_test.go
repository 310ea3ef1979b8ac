package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"trustpool/internal/agent/bootsim"
	"trustpool/internal/evidence"
	"trustpool/internal/policy"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
)

// TestEvidenceExportReproduces: an agent on swtpm is attested trusted after
// a golden import; GET /v1/hosts/{name}/evidence gives its stored
// attestation as a bundle, and checking that bundle offline, as `trustpool
// verify --bundle --policy` does, with the known-good values in force
// reproduces the verdict.
func TestEvidenceExportReproduces(t *testing.T) {
	needSWTPM(t)
	e := startServer(t)
	startNode(t, e, "node1", bootsim.Profile{Launch: true})
	e.golden("node1")
	if v := e.attest("node1"); v.Level != verdict.Trusted {
		t.Fatalf("attestation: %+v, want trusted", v)
	}

	code, body := e.call("GET", "/v1/hosts/NODE1/evidence", nil)
	if code != http.StatusOK {
		t.Fatalf("export: %d %s", code, body)
	}
	b, err := evidence.DecodeBundle(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the export is not a bundle verify --bundle reads: %v", err)
	}
	if b.Host != "node1" {
		t.Errorf("bundle names host %q", b.Host)
	}
	var refList []*policy.Reference
	var pols []*policy.Policy
	for path, dst := range map[string]any{"/v1/references": &refList, "/v1/policies": &pols} {
		code, body := e.call("GET", path, nil)
		if code != http.StatusOK || json.Unmarshal(body, dst) != nil {
			t.Fatalf("%s: %d %s", path, code, body)
		}
	}
	refs := map[string]*policy.Reference{}
	for _, r := range refList {
		refs[r.Name] = r
	}
	byName := map[string]*policy.Policy{}
	for _, p := range pols {
		byName[p.Name] = p
	}
	pol := policy.For(byName, "", nil)
	if pol == nil {
		t.Fatalf("no default policy among %v", pols)
	}
	ak, err := verify.ParseAK(b.AKPublic)
	if err != nil {
		t.Fatal(err)
	}
	res := ak.Verify(verify.Input{Nonce: b.Nonce, Required: append(b.Required, policy.Selection(pol, refs)...), Evidence: b.Evidence})
	if !res.OK() {
		t.Fatalf("the exported bundle does not verify offline: %v", res.Reasons)
	}
	if r := policy.Evaluate(pol, refs, &res.Measurements); r.Level != verdict.Trusted {
		t.Fatalf("offline verdict %s %v, the server's is trusted", r.Level, r.Reasons)
	}

	// An unknown host is a 404 (roles: the tamper matrix; no evidence yet:
	// the CLI test).
	if code, body := e.call("GET", "/v1/hosts/nobody/evidence", nil); code != http.StatusNotFound || !strings.Contains(string(body), `no host \"nobody\"`) {
		t.Errorf("unknown host: %d %s", code, body)
	}
}
