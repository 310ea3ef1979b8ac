package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trustpool/internal/api"
	"trustpool/internal/auth"
	"trustpool/internal/evidence"
	"trustpool/internal/policy"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

// evidenceAPI is the real API (its GET /v1/hosts/{name}/evidence route) on
// a real SQLite store, over TLS, with a state directory holding its CA and
// the admin token as the server writes them.
func evidenceAPI(t *testing.T) (*store.Store, *apiFlags) {
	t.Helper()
	dir := t.TempDir()
	s, err := store.Open(context.Background(), "sqlite:"+filepath.Join(dir, "trustpool.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a := api.New(api.Config{Store: s, Auth: auth.New(auth.Config{Store: s, Bootstrap: testAdminToken}),
		Now: time.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	srv := httptest.NewTLSServer(a)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	for name, b := range map[string][]byte{"ca.pem": ca, "admin.token": []byte(testAdminToken + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return s, &apiFlags{server: srv.URL, stateDir: dir, out: &output{}}
}

// runExport runs `trustpool evidence export` with args and returns its
// error and standard output.
func runExport(t *testing.T, af *apiFlags, args ...string) (string, error) {
	t.Helper()
	cmd := evidenceCmd(af)
	af.out.register(cmd.PersistentFlags())
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs(append([]string{"export"}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestEvidenceExport: the server stores a host's verified attestation;
// `evidence export` writes it as a bundle, and `verify --bundle` on that
// file with the host's policy reproduces the server's verdict offline.
func TestEvidenceExport(t *testing.T) {
	s, af := evidenceAPI(t)
	ctx := context.Background()
	n, err := verifytest.NewNode(verifytest.RSA2048, "node1.example")
	if err != nil {
		t.Fatal(err)
	}
	n.DRTMLog = verifytest.DRTMLog("kvm").Bytes()
	n.Selection = []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 17, 18, 19}}}
	nonce := bytes.Repeat([]byte{9}, 32)
	ev, err := n.Evidence(nonce)
	if err != nil {
		t.Fatal(err)
	}
	// What the server does with the agent's answer: verify, judge, store.
	ak, err := verify.ParseAK(n.AK.Public())
	if err != nil {
		t.Fatal(err)
	}
	res := ak.Verify(verify.Input{Nonce: nonce, Required: n.Selection, Evidence: ev})
	if !res.OK() {
		t.Fatal(res.Reasons)
	}
	refs, err := policy.Golden("gold", 1, &res.Measurements, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Approve(nil, policy.DefaultName, refs)
	pol.Version = 1
	want := policy.Evaluate(pol, map[string]*policy.Reference{refs[0].Name: refs[0], refs[1].Name: refs[1], refs[2].Name: refs[2]}, &res.Measurements)
	if want.Level != verdict.Trusted {
		t.Fatalf("the server's verdict: %v", want.Reasons)
	}
	evJSON, _ := json.Marshal(ev)
	mJSON, _ := json.Marshal(res.Measurements)
	now := time.Now().UTC()
	for _, h := range []string{"node1.example", "new.example"} {
		if err := s.PutHost(ctx, store.Host{Name: h, State: store.HostActive, EKPublic: []byte(h), AKPublic: n.AK.Public(), URL: "https://" + h}); err != nil {
			t.Fatal(err)
		}
	}
	v := verdict.Verdict{Host: "node1.example", Level: want.Level, VTime: now, Expiry: now.Add(time.Hour)}
	if _, err := s.PutVerdict(ctx, v, &store.EvidenceRecord{Host: "node1.example", Evidence: evJSON, Nonce: nonce, Measurements: mJSON, VerifiedAt: now}); err != nil {
		t.Fatal(err)
	}
	polFile := writeJSON(t, "policy.json", policy.Change{References: refs, Policies: []*policy.Policy{pol}})

	bundle := filepath.Join(t.TempDir(), "node1.bundle.json")
	if _, err := runExport(t, af, "Node1.example", "--out", bundle); err != nil {
		t.Fatalf("evidence export: %v", err)
	}
	code, rep, stderr := verifyBundleJSON(t, bundleOptions{bundle: bundle, policy: polFile})
	if code != exitOK || !rep.Verified || rep.Policy == nil || rep.Policy.Level != verdict.Trusted || rep.Host != "node1.example" {
		t.Fatalf("verify --bundle on the export: exit %d (%s), report %+v", code, stderr, rep)
	}

	// To standard output, byte for byte the same bundle.
	stdout, err := runExport(t, af, "node1.example")
	file, _ := os.ReadFile(bundle)
	if err != nil || stdout != string(file) {
		t.Fatalf("export to stdout: %v, %d bytes, the file has %d", err, len(stdout), len(file))
	}

	// Another host's policy: the export verifies, and the policy refuses it.
	other := verifytest.BootLog("node2.example")
	n2 := *n
	n2.EventLog = other.Bytes()
	r2 := ak.Verify(verify.Input{Nonce: nonce, Required: n.Selection, Evidence: mustEvidence(t, &n2, nonce)})
	refs2, err := policy.Golden("other", 1, &r2.Measurements, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol2 := policy.Approve(nil, policy.DefaultName, refs2)
	pol2.Version = 1
	code, rep, _ = verifyBundleJSON(t, bundleOptions{bundle: bundle, policy: writeJSON(t, "p2.json", policy.Change{References: refs2, Policies: []*policy.Policy{pol2}})})
	if code != exitMismatch || !rep.Verified || rep.Policy == nil || rep.Policy.Level != verdict.Untrusted {
		t.Fatalf("another host's policy: exit %d, report %+v", code, rep)
	}

	// The host enrolled again (another AK): its old evidence no longer
	// verifies under the AK the server holds, and the report says where.
	ak2, err := verifytest.NewSoftAK(verifytest.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutHost(ctx, store.Host{Name: "node1.example", State: store.HostActive, EKPublic: []byte("node1.example"), AKPublic: ak2.Public(), URL: "https://node1.example"}); err != nil {
		t.Fatal(err)
	}
	reenrolled := filepath.Join(t.TempDir(), "reenrolled.json")
	if _, err := runExport(t, af, "node1.example", "--out", reenrolled); err != nil {
		t.Fatal(err)
	}
	code, rep, _ = verifyBundleJSON(t, bundleOptions{bundle: reenrolled})
	if st := statuses(rep); code != exitMismatch || rep.Verified || st["signature"] == "passed" && st["signer"] == "passed" {
		t.Fatalf("evidence from before a re-enrollment: exit %d, checks %v, reasons %v", code, st, rep.Reasons)
	}

	for _, tc := range []struct{ host, want string }{
		{"new.example", `host "new.example" has no verified evidence`},
		{"nobody.example", `no host "nobody.example"`},
	} {
		if _, err := runExport(t, af, tc.host); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "404") {
			t.Errorf("export %s: %v, want a 404 saying %q", tc.host, err, tc.want)
		}
	}
	// A reader may export; a scheduler may not.
	for role, ok := range map[auth.Role]bool{auth.RoleReader: true, auth.RoleScheduler: false} {
		tok := createToken(t, s, role)
		t.Setenv("TRUSTPOOL_TOKEN", tok)
		if _, err := runExport(t, af, "node1.example"); (err == nil) != ok {
			t.Errorf("export as %s: %v", role, err)
		}
	}
}

func mustEvidence(t *testing.T, n *verifytest.Node, nonce []byte) *evidence.Evidence {
	t.Helper()
	ev, err := n.Evidence(nonce)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// createToken stores an API token with role and returns it.
func createToken(t *testing.T, s *store.Store, role auth.Role) string {
	t.Helper()
	tok, hash := auth.NewToken()
	if err := s.CreateToken(context.Background(), store.Token{Hash: hash, Name: "test-" + string(role), Role: string(role), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return tok
}
