package tamper_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"trustpool/internal/api"
	"trustpool/internal/integrity"
	"trustpool/internal/pki"
	"trustpool/internal/server"
	"trustpool/internal/server/servertest"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// clock is the server's injected clock; tests move it by hand to expire
// verdicts and join tokens without waiting.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is an attestation server running in process on 127.0.0.1, with
// the simulated and swtpm nodes a test added to it.
type fixture struct {
	t        *testing.T
	ctx      context.Context
	dir      string
	clock    *clock
	srv      *server.Server
	http     *http.Client
	admin    string // the admin bearer token
	novaBlob string // Nova's x-auth-blob
	// ca is the server's CA loaded from its state directory: the test acts
	// as the operator, who can read it, to give simulated nodes the agent
	// certificate enrollment would have issued them.
	ca    *pki.CA
	sims  map[string]*simAgent
	nodes map[string]*swNode
}

// newFixture starts a server with the integrity settings in cfg (Now and
// Log are set here) and whatever opts change in its configuration. The
// interval defaults to an hour, so that nothing is attested behind a test's
// back: tests attest through the API.
func newFixture(t *testing.T, cfg integrity.Config, opts ...func(*server.Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	clk := &clock{t: time.Now().UTC().Truncate(time.Second)}
	// Attacks make the server log warnings by design; show only errors.
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	if cfg.Interval == 0 {
		cfg.Interval = time.Hour
	}
	cfg.Now, cfg.Log = clk.Now, log
	scfg := server.Config{StateDir: dir, Listen: "127.0.0.1:0", Log: log, Integrity: cfg}
	for _, o := range opts {
		o(&scfg)
	}
	srv, ctx, admin := servertest.Start(t, scfg)
	ca, err := pki.LoadOrCreateCA(dir, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{
		t: t, ctx: ctx, dir: dir, clock: clk, srv: srv, ca: ca,
		http:     api.NewHTTPClient(srv.CAPEM()),
		admin:    admin,
		novaBlob: readSecret(t, filepath.Join(dir, server.NovaBlobFile)),
		sims:     map[string]*simAgent{}, nodes: map[string]*swNode{},
	}
}

func readSecret(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// request builds a request to the server with the admin token; body is raw
// bytes or a value to encode as JSON.
func (f *fixture) request(method, path string, body any) *http.Request {
	f.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			f.t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(f.ctx, method, f.srv.URL()+path, r)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.admin)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// send sends req with client (the admin's client when nil) and returns the
// status and body.
func (f *fixture) send(req *http.Request, client *http.Client) (int, []byte) {
	f.t.Helper()
	if client == nil {
		client = f.http
	}
	resp, err := client.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// call is send(request(...)) as the admin.
func (f *fixture) call(method, path string, body any) (int, []byte) {
	f.t.Helper()
	return f.send(f.request(method, path, body), nil)
}

// mustCall is call that fails the test on a non-2xx answer and decodes the
// answer into out (when not nil).
func (f *fixture) mustCall(method, path string, body, out any) {
	f.t.Helper()
	code, b := f.call(method, path, body)
	if code/100 != 2 {
		f.t.Fatalf("%s %s: %d %s", method, path, code, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			f.t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
}

// attest asks the server to attest host now and returns the verdict it
// answered with.
func (f *fixture) attest(host string) api.PoolEntry {
	f.t.Helper()
	var e api.PoolEntry
	f.mustCall("POST", "/v1/hosts/"+host+"/attest", nil, &e)
	return e
}

// clientWithCert is an HTTPS client trusting the server's CA that presents
// cert (nil: none).
func (f *fixture) clientWithCert(cert *tls.Certificate) *http.Client {
	c := api.NewHTTPClient(f.srv.CAPEM())
	if cert != nil {
		c.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	return c
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func reasonCodes(rs []verdict.Reason) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Code)
	}
	return out
}

// hasReason reports whether rs holds a reason with code, about pcr when pcr
// is not negative, in bank when bank is not empty.
func hasReason(rs []verdict.Reason, code string, pcr int, bank string) bool {
	return slices.ContainsFunc(rs, func(r verdict.Reason) bool {
		return r.Code == code && (pcr < 0 || r.PCR != nil && *r.PCR == pcr) && (bank == "" || r.Bank == bank)
	})
}

// snapshot is what the server has stored that an attack must not lose.
type snapshot struct {
	hosts    map[string]store.Host
	refs     []store.Reference
	policies []store.Policy
	evidence map[string]store.EvidenceRecord
	audit    []store.Entry
}

func (f *fixture) snapshot() snapshot {
	f.t.Helper()
	ctx, st := f.ctx, f.srv.Store()
	s := snapshot{hosts: map[string]store.Host{}, evidence: map[string]store.EvidenceRecord{}}
	hosts, err := st.ListHosts(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, h := range hosts {
		s.hosts[h.Name] = h
		switch ev, err := st.LatestEvidence(ctx, h.Name); {
		case err == nil:
			s.evidence[h.Name] = ev
		case !errors.Is(err, store.ErrNotFound):
			f.t.Fatal(err)
		}
	}
	if s.refs, err = st.ListReferences(ctx); err != nil {
		f.t.Fatal(err)
	}
	if s.policies, err = st.ListPolicies(ctx); err != nil {
		f.t.Fatal(err)
	}
	if s.audit, err = st.ListAudit(ctx, 0, 100000); err != nil {
		f.t.Fatal(err)
	}
	if err := store.VerifyChain(s.audit); err != nil {
		f.t.Fatalf("audit chain: %v", err)
	}
	return s
}

// checkKept fails t unless everything in before is still stored unchanged
// (a case that admits hosts of its own may audit their approval and
// deletion).
// The last verified evidence of the hosts in mayAttest may have been
// replaced by a newer verified one (a case that legitimately stays
// trusted); every other host's must be byte for byte the same, because
// evidence that failed verification is never stored.
func (f *fixture) checkKept(t *testing.T, before snapshot, admits bool, mayAttest ...string) {
	t.Helper()
	after := f.snapshot()
	for name, h := range before.hosts {
		got, ok := after.hosts[name]
		if !ok {
			t.Errorf("host %s was lost", name)
			continue
		}
		if got.State != h.State || !bytes.Equal(got.EKPublic, h.EKPublic) || !bytes.Equal(got.AKPublic, h.AKPublic) ||
			got.URL != h.URL || !bytes.Equal(got.AgentCert, h.AgentCert) {
			t.Errorf("host %s changed: state %s→%s, URL %s→%s, EK/AK/cert equal %v/%v/%v", name, h.State, got.State, h.URL, got.URL,
				bytes.Equal(got.EKPublic, h.EKPublic), bytes.Equal(got.AKPublic, h.AKPublic), bytes.Equal(got.AgentCert, h.AgentCert))
		}
	}
	for name := range after.hosts {
		if _, ok := before.hosts[name]; !ok {
			t.Errorf("host %s appeared", name)
		}
	}
	if !sameVersions(before.refs, after.refs) {
		t.Errorf("references changed: %v → %v", refVersions(before.refs), refVersions(after.refs))
	}
	if len(before.policies) != len(after.policies) || len(before.policies) > 0 && before.policies[0].Version != after.policies[0].Version {
		t.Errorf("policies changed: %d → %d", len(before.policies), len(after.policies))
	}
	for name, ev := range before.evidence {
		got, ok := after.evidence[name]
		switch {
		case !ok:
			t.Errorf("the verified evidence of %s was lost", name)
		case slices.Contains(mayAttest, name):
			if got.VerifiedAt.Before(ev.VerifiedAt) {
				t.Errorf("the evidence of %s went back in time: %v → %v", name, ev.VerifiedAt, got.VerifiedAt)
			}
		case !bytes.Equal(got.Evidence, ev.Evidence) || !bytes.Equal(got.Measurements, ev.Measurements) || !got.VerifiedAt.Equal(ev.VerifiedAt):
			t.Errorf("the verified evidence of %s was replaced (verified at %v → %v)", name, ev.VerifiedAt, got.VerifiedAt)
		}
	}
	if len(after.audit) < len(before.audit) {
		t.Errorf("audit log shrank from %d to %d entries", len(before.audit), len(after.audit))
	}
	for _, e := range after.audit[min(len(before.audit), len(after.audit)):] {
		if !slices.Contains(auditedDuringAttacks, e.Action) && !(admits && (e.Action == "host.approve" || e.Action == "host.delete")) {
			t.Errorf("the attack added audit entry %d: %s %s %s by %s", e.Seq, e.Action, e.Subject, e.Detail, e.Actor)
		}
	}
	for i, e := range before.audit {
		if i < len(after.audit) && !bytes.Equal(after.audit[i].Hash, e.Hash) {
			t.Errorf("audit entry %d was rewritten", e.Seq)
		}
	}
}

// auditedDuringAttacks are the audit actions a case may add: the level
// changes the attacks cause, and the credentials the test itself makes.
// Nothing may touch hosts, references or policies.
var auditedDuringAttacks = []string{"verdict.change", "join-token.create", "token.create"}

func sameVersions(a, b []store.Reference) bool {
	return slices.Equal(refVersions(a), refVersions(b))
}

func refVersions(rs []store.Reference) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s@v%d", r.Name, r.Version))
	}
	return out
}
