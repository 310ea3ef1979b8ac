package server_test

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"trustpool/internal/agent/bootsim"
	"trustpool/internal/api"
	"trustpool/internal/knowngood"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

func (e *env) change(path string, body any) api.ChangeResult {
	e.t.Helper()
	code, out := e.call("POST", path, body)
	if code != http.StatusOK {
		e.t.Fatalf("%s: %d %s", path, code, out)
	}
	var res api.ChangeResult
	if err := json.Unmarshal(out, &res); err != nil {
		e.t.Fatal(err)
	}
	return res
}

func levels(cs []knowngood.Change) map[string]verdict.Level {
	m := map[string]verdict.Level{}
	for _, c := range cs {
		m[c.Host] = c.To
	}
	return m
}

// TestPreviewEqualsApply walks a rolling hypervisor upgrade on real swtpm
// nodes: golden import, then approving a second hypervisor, then retiring
// the first. Each step is previewed first and must then do exactly that.
func TestPreviewEqualsApply(t *testing.T) {
	needSWTPM(t)
	e := startServer(t)
	startNode(t, e, "node1", bootsim.Profile{Launch: true})
	startNode(t, e, "node2", bootsim.Profile{Launch: true, Hypervisor: "kvm-6.8.0-41"})
	e.attest("node1")
	e.attest("node2")

	golden := func(host, name string) (preview, apply func() api.ChangeResult) {
		body := func(p bool) any { return map[string]any{"host": host, "name": name, "preview": p} }
		return func() api.ChangeResult { return e.change("/v1/golden", body(true)) },
			func() api.ChangeResult { return e.change("/v1/golden", body(false)) }
	}
	step := func(name string, preview, apply func() api.ChangeResult, want map[string]verdict.Level) {
		t.Helper()
		if got := levels(preview().Changes); !maps.Equal(got, want) {
			t.Fatalf("%s: preview %v, want %v", name, got, want)
		}
		if got := levels(apply().Changes); !maps.Equal(got, want) {
			t.Fatalf("%s: apply did %v, preview said %v", name, got, want)
		}
		for h, lvl := range want {
			if got := e.srv.Integrity().Cache().Level(h); got != lvl {
				t.Fatalf("%s: %s is %s after apply, want %s", name, h, got, lvl)
			}
		}
	}
	p, a := golden("node1", "v1")
	step("golden import from node1", p, a, map[string]verdict.Level{"node1": verdict.Trusted})
	p, a = golden("node2", "v2")
	step("approve node2's hypervisor beside", p, a, map[string]verdict.Level{"node2": verdict.Trusted})
	retire := map[string]any{"retire": []string{"v1-vmm"}}
	step("retire v1's hypervisor",
		func() api.ChangeResult { return e.change("/v1/preview", retire) },
		func() api.ChangeResult { return e.change("/v1/apply", retire) },
		map[string]verdict.Level{"node1": verdict.Untrusted})

	// Every change was audited, in order, with the versions it made.
	entries, err := e.srv.Store().ListAudit(e.ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, en := range entries {
		actions = append(actions, en.Action+" "+en.Subject)
	}
	for _, want := range []string{"reference.put v1-bios@v1", "reference.put v1-vmm@v1", "policy.put default@v1",
		"reference.put v2-vmm@v1", "policy.put default@v2", "reference.retire v1-vmm@v2"} {
		if !slices.Contains(actions, want) {
			t.Errorf("audit lacks %q: %v", want, actions)
		}
	}
	if err := store.VerifyChain(entries); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	// The verdict names the versions it used.
	v, _ := e.srv.Integrity().Cache().Verdict("node2")
	if f := strings.Fields(v.Policy); !slices.Contains(f, "default@v2") || !slices.Contains(f, "v2-vmm@v1") {
		t.Fatalf("node2's verdict names %q", v.Policy)
	}
}

// A host that never produced verified evidence cannot become known-good.
func TestGoldenRefusedWithoutVerifiedEvidence(t *testing.T) {
	e := startServer(t)
	if err := e.srv.Store().PutHost(e.ctx, store.Host{Name: "fresh", State: store.HostActive, EKPublic: []byte("ek"), AKPublic: []byte("ak"), URL: "https://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	code, body := e.call("POST", "/v1/golden", map[string]string{"host": "fresh"})
	if code != http.StatusConflict {
		t.Fatalf("golden import without evidence: %d %s, want 409", code, body)
	}
	// An attestation that fails (unreachable agent) stores no evidence either.
	e.call("POST", "/v1/hosts/fresh/attest", nil)
	if code, _ := e.call("POST", "/v1/golden", map[string]string{"host": "fresh"}); code != http.StatusConflict {
		t.Fatalf("golden import after a failed attestation: %d, want 409", code)
	}
}
