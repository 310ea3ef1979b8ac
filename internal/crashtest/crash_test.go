package crashtest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"trustpool/internal/api"
	"trustpool/internal/pki"
	"trustpool/internal/policy"
	"trustpool/internal/server"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
)

// Files of other packages' state directories that the test reads. They are
// not exported because nothing but an operator (or this test) should need
// them.
const (
	dbFile        = "trustpool.db" // the server's SQLite store
	agentCertFile = "agent.pem"    // written by an agent after a 2xx activation
)

// cluster is a server process, its state directory and the agents started
// against it.
type cluster struct {
	t      *testing.T
	bin    string
	dir    string // scratch: logs and agent state
	state  string // the server's state directory
	listen string // host:port, kept across restarts
	url    string
	admin  string
	http   *http.Client
	server *proc
	agents map[string]*proc
}

func (c *cluster) startServer(logName string) {
	t := c.t
	c.server = start(t, "server", c.bin, filepath.Join(c.dir, logName),
		"server", "--state-dir", c.state, "--listen", c.listen, "--interval", "1s")
	c.url = c.server.serverURL(t)
	c.listen = strings.TrimPrefix(c.url, "https://")
	caPEM, err := os.ReadFile(filepath.Join(c.state, pki.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := os.ReadFile(filepath.Join(c.state, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	c.http, c.admin = api.NewHTTPClient(caPEM), strings.TrimSpace(string(tok))
	c.http.Timeout = 20 * time.Second
	waitFor(t, "the server's health check", func() bool {
		code, _, err := c.do("GET", "/healthz", nil)
		return err == nil && code == http.StatusOK
	})
}

// do calls the server as the admin; body is a value to encode as JSON.
func (c *cluster) do(method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.url+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// must is do for calls that must succeed, decoding the answer into out.
func (c *cluster) must(method, path string, body, out any) {
	c.t.Helper()
	code, b, err := c.do(method, path, body)
	if err != nil || code/100 != 2 {
		c.t.Fatalf("%s %s: %d %v %s", method, path, code, err, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// startAgent makes a join token for name and starts its agent on an
// in-process TPM simulator after a clean simulated boot.
func (c *cluster) startAgent(name string) {
	var tok struct{ Token string }
	c.must("POST", "/v1/join-tokens", map[string]string{"host": name}, &tok)
	c.agents[name] = start(c.t, name, c.bin, filepath.Join(c.dir, name+".log"),
		"agent", "--name", name, "--server", c.url, "--server-ca", filepath.Join(c.state, pki.CAFile),
		"--listen", "127.0.0.1:0", "--state-dir", filepath.Join(c.dir, name), "--join-token", tok.Token,
		"--tpm", "simulator", "--simulate-boot", "clean", "--log-level", "warn")
}

// enrolled reports whether name's agent was admitted: it writes its
// certificate only after the server answered the activation with 2xx.
func (c *cluster) enrolled(name string) bool {
	_, err := os.Stat(filepath.Join(c.dir, name, agentCertFile))
	return err == nil
}

// pool returns the pool by host name.
func (c *cluster) pool() map[string]api.PoolEntry {
	var p api.Pool
	c.must("GET", "/v1/pool", nil, &p)
	out := map[string]api.PoolEntry{}
	for _, e := range p.Hosts {
		out[e.Host] = e
	}
	return out
}

// acked is what the server acknowledged with a 2xx before the kill.
type acked struct {
	mu       sync.Mutex           // guards the fields below
	hosts    []string             // enrolled (the agent holds its certificate)
	verdicts map[string]time.Time // host → latest vtime answered by attest
	refs     map[string]int       // reference → highest version stored
	policies map[string]int       // policy → highest version stored
	audit    []string             // audit subjects of acknowledged changes
	attests  int                  // acknowledged attestations
	flips    int                  // level changes the acknowledged policy changes made
	good     *policy.Policy       // the default policy as golden import made it
	toggles  int
}

// TestKillDuringStorm is the crash-safety test (see the package comment).
func TestKillDuringStorm(t *testing.T) {
	needTools(t)
	if testing.Short() {
		t.Skip("builds the binary and runs a dozen processes")
	}
	dir := t.TempDir()
	c := &cluster{t: t, bin: build(t), dir: dir, state: filepath.Join(dir, "state"), listen: "127.0.0.1:0", agents: map[string]*proc{}}
	c.startServer("server-1.log")

	// Two nodes enroll and node1 becomes the golden host.
	for _, n := range []string{"node1", "node2"} {
		c.startAgent(n)
	}
	waitFor(t, "node1 and node2 attested", func() bool {
		p := c.pool()
		e1, ok1 := p["node1"]
		e2, ok2 := p["node2"]
		return ok1 && ok2 && !hasCode(e1.Reasons, verdict.CodeNotAttested) && !hasCode(e2.Reasons, verdict.CodeNotAttested)
	})
	c.must("POST", "/v1/golden", map[string]string{"host": "node1", "name": "golden"}, nil)
	waitFor(t, "node1 and node2 trusted", func() bool {
		p := c.pool()
		return p["node1"].Level == verdict.Trusted && p["node2"].Level == verdict.Trusted
	})
	var pols []*policy.Policy
	c.must("GET", "/v1/policies", nil, &pols)

	// The storm: six more nodes enroll at once while operators attest
	// every node they can, write references, and require and un-require
	// a class no reference is approved for, so that every re-evaluation
	// flips every host's level.
	ack := &acked{verdicts: map[string]time.Time{}, refs: map[string]int{}, policies: map[string]int{}, good: pols[0]}
	storm := []string{"node3", "node4", "node5", "node6", "node7", "node8"}
	for _, n := range storm {
		c.startAgent(n)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() { c.attestStorm(ack, stop, w) })
	}
	wg.Go(func() { c.knownGoodStorm(ack, stop) })
	waitFor(t, "a storm worth killing", func() bool {
		ack.mu.Lock()
		defer ack.mu.Unlock()
		return slices.ContainsFunc(storm, c.enrolled) && ack.attests >= 10 && len(ack.refs) >= 2 && ack.policies["default"] > 0 && ack.flips >= 4
	})
	c.server.kill()
	close(stop)
	wg.Wait()
	for _, n := range append([]string{"node1", "node2"}, storm...) {
		if c.enrolled(n) {
			ack.hosts = append(ack.hosts, n)
		}
	}
	t.Logf("killed the server after %d acknowledged attestations and %d known-good changes (%d level flips); %d of %d storm nodes were enrolled",
		ack.attests, len(ack.audit), ack.flips, len(ack.hosts)-2, len(storm))

	// What the dead server left on disk.
	before, latest := checkStore(t, filepath.Join(c.state, dbFile), ack)

	// The restarted server serves it, and goes on attesting.
	c.startServer("server-2.log")
	pool := c.pool()
	var hosts []api.HostView
	c.must("GET", "/v1/hosts", nil, &hosts)
	for _, h := range ack.hosts {
		if !slices.ContainsFunc(hosts, func(v api.HostView) bool { return v.Name == h }) {
			t.Errorf("after the restart GET /v1/hosts lacks %s", h)
		}
	}
	for host, v := range before {
		e, ok := pool[host]
		got, err := time.Parse(time.RFC3339, e.VTime)
		// The kill may fall between a policy version's commit and the
		// re-evaluation it causes: at start the server re-evaluates, so a
		// verdict under an older version may read another level.
		stale := !strings.HasPrefix(v.Policy, fmt.Sprintf("default@v%d ", latest))
		if !ok || err != nil || got.Before(v.VTime.Truncate(time.Second)) || got.Equal(v.VTime.Truncate(time.Second)) && e.Level != v.At(time.Now()) && !stale {
			t.Errorf("after the restart the pool says %s is %s at %s, the store said %s at %s", host, e.Level, e.VTime, v.Level, v.VTime)
		}
	}
	var refs []policy.Reference
	c.must("GET", "/v1/references", nil, &refs)
	for name, v := range ack.refs {
		if !slices.ContainsFunc(refs, func(r policy.Reference) bool { return r.Name == name && r.Version >= v }) {
			t.Errorf("after the restart GET /v1/references lacks %s@v%d", name, v)
		}
	}
	var stored []policy.Policy
	c.must("GET", "/v1/policies", nil, &stored)
	if !slices.ContainsFunc(stored, func(p policy.Policy) bool { return p.Name == "default" && p.Version >= ack.policies["default"] }) {
		t.Errorf("after the restart GET /v1/policies lacks default@v%d: %+v", ack.policies["default"], stored)
	}
	// The storm may have died with the class required: put the golden
	// policy back.
	c.must("PUT", "/v1/policies/default", ack.good, nil)
	alive := slices.DeleteFunc(slices.Clone(ack.hosts), func(n string) bool { return c.agents[n].exited() })
	waitFor(t, fmt.Sprintf("%v trusted after the restart", alive), func() bool {
		p := c.pool()
		for _, n := range alive {
			if p[n].Level != verdict.Trusted {
				return false
			}
		}
		return true
	})
}

func hasCode(rs []verdict.Reason, code string) bool {
	return slices.ContainsFunc(rs, func(r verdict.Reason) bool { return r.Code == code })
}

// attestStorm attests every node it can, over and over, recording the
// verdicts the server acknowledged.
func (c *cluster) attestStorm(ack *acked, stop <-chan struct{}, worker int) {
	for i := worker; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		host := fmt.Sprintf("node%d", 1+i%8)
		code, body, err := c.do("POST", "/v1/hosts/"+host+"/attest", nil)
		if err != nil || code != http.StatusOK {
			continue // not enrolled yet, or the server is gone: nothing acknowledged
		}
		var e api.PoolEntry
		if json.Unmarshal(body, &e) != nil {
			continue
		}
		vtime, err := time.Parse(time.RFC3339, e.VTime)
		if err != nil {
			continue
		}
		ack.mu.Lock()
		ack.attests++
		if vtime.After(ack.verdicts[host]) {
			ack.verdicts[host] = vtime
		}
		ack.mu.Unlock()
	}
}

// knownGoodStorm writes new references (not approved by any policy, so
// verdicts keep their levels) and re-writes the default policy, each a new
// version with an audit entry, recording what the server acknowledged.
func (c *cluster) knownGoodStorm(ack *acked, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		if i%3 == 2 {
			c.rewritePolicy(ack)
			continue
		}
		name := fmt.Sprintf("extra-%d", i%5)
		ref := policy.Reference{Name: name, Class: policy.HostUnique, Meta: map[string]string{"round": strconv.Itoa(i)},
			Expect: []policy.Expectation{{PCR: 23, Bank: "sha256", Digests: []policy.Hex{bytes.Repeat([]byte{byte(i)}, 32)}}}}
		code, body, err := c.do("PUT", "/v1/references/"+name, ref)
		var res api.ChangeResult
		if err != nil || code != http.StatusOK || json.Unmarshal(body, &res) != nil || len(res.References) != 1 {
			continue
		}
		ack.mu.Lock()
		ack.refs[name] = max(ack.refs[name], res.References[0].Version)
		ack.audit = append(ack.audit, fmt.Sprintf("%s@v%d", name, res.References[0].Version))
		ack.mu.Unlock()
	}
}

// rewritePolicy writes a new version of the default policy: in turn the
// golden one, and one that also requires the host_unique class, which no
// reference is approved for (every host turns untrusted).
func (c *cluster) rewritePolicy(ack *acked) {
	ack.mu.Lock()
	ack.toggles++
	p := *ack.good
	if ack.toggles%2 == 1 {
		p.Require = append(slices.Clone(p.Require), policy.HostUnique)
	}
	ack.mu.Unlock()
	code, body, err := c.do("PUT", "/v1/policies/default", &p)
	var res api.ChangeResult
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &res) != nil || len(res.Policies) != 1 {
		return
	}
	ack.mu.Lock()
	ack.policies["default"] = max(ack.policies["default"], res.Policies[0].Version)
	ack.audit = append(ack.audit, fmt.Sprintf("default@v%d", res.Policies[0].Version))
	ack.flips += len(res.Changes)
	ack.mu.Unlock()
}

// checkStore opens the dead server's store and checks it against what was
// acknowledged, and every verdict against its evidence. It returns the
// stored verdicts by host and the latest version of the default policy.
func checkStore(t *testing.T, path string, ack *acked) (map[string]verdict.Verdict, int) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	for _, h := range ack.hosts {
		if got, err := st.GetHost(ctx, h); err != nil || got.State != store.HostActive {
			t.Errorf("enrolled host %s: %+v %v, want it stored and active", h, got.State, err)
		}
	}
	for name, v := range ack.refs {
		if _, err := st.GetReference(ctx, name, v); err != nil {
			t.Errorf("acknowledged reference %s@v%d: %v", name, v, err)
		}
	}
	if v := ack.policies["default"]; v > 0 {
		if _, err := st.GetPolicy(ctx, "default", v); err != nil {
			t.Errorf("acknowledged policy default@v%d: %v", v, err)
		}
	}
	checkAudit(t, st, ack.audit)

	vs, err := st.LatestVerdicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byHost := map[string]verdict.Verdict{}
	for _, v := range vs {
		byHost[v.Host] = v
	}
	for host, at := range ack.verdicts {
		if v, ok := byHost[host]; !ok || v.VTime.Truncate(time.Second).Before(at) {
			t.Errorf("the acknowledged verdict of %s at %s was lost: the store has %s at %s", host, at, v.Level, v.VTime)
		}
	}
	hosts, err := st.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkTransitionsAudited(t, ctx, st, hosts)
	for _, h := range hosts {
		rec, err := st.LatestEvidence(ctx, h.Name)
		if errors.Is(err, store.ErrNotFound) {
			if v, ok := byHost[h.Name]; ok && v.Level == verdict.Trusted {
				t.Errorf("%s is trusted with no verified evidence", h.Name)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		v, ok := byHost[h.Name]
		if !ok {
			t.Errorf("%s has verified evidence of %s but no verdict", h.Name, rec.VerifiedAt)
			continue
		}
		checkVerdict(t, ctx, st, v, rec)
	}
	latest := 0
	pols, err := st.ListPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pols {
		if p.Name == "default" {
			latest = max(latest, p.Version)
		}
	}
	return byHost, latest
}

// checkTransitionsAudited checks that every level change in a host's
// history has its audit entry: the two are written in one transaction, so
// a kill cannot leave one without the other. (A first verdict that is
// unknown starts the history but changes no level.)
func checkTransitionsAudited(t *testing.T, ctx context.Context, st *store.Store, hosts []store.Host) {
	t.Helper()
	entries, err := st.ListAudit(ctx, 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	audited := map[string]int{}
	for _, e := range entries {
		if e.Action == "verdict.change" {
			audited[e.Subject]++
		}
	}
	for _, h := range hosts {
		hist, err := st.History(ctx, h.Name, 1000)
		if err != nil {
			t.Fatal(err)
		}
		changes := len(hist)
		if changes > 0 && hist[len(hist)-1].Level == verdict.Unknown {
			changes--
		}
		if audited[h.Name] != changes {
			t.Errorf("%s: %d level changes in its history, %d verdict.change audit entries", h.Name, changes, audited[h.Name])
		}
	}
}

// checkVerdict checks that v agrees with the host's latest verified
// evidence: a verdict established from that evidence (same time) is what
// the policy and reference versions it names give for it; a later verdict
// (a failed attestation) is not trusted; an earlier one is stale.
func checkVerdict(t *testing.T, ctx context.Context, st *store.Store, v verdict.Verdict, rec store.EvidenceRecord) {
	t.Helper()
	switch {
	case v.VTime.Before(rec.VerifiedAt):
		t.Errorf("%s: the latest verdict (%s at %s) is older than the latest verified evidence (%s): the verdict does not judge the evidence kept",
			v.Host, v.Level, v.VTime, rec.VerifiedAt)
		return
	case v.VTime.After(rec.VerifiedAt):
		if v.Level == verdict.Trusted {
			t.Errorf("%s: trusted at %s without evidence verified then (latest %s)", v.Host, v.VTime, rec.VerifiedAt)
		}
		return
	}
	var m verify.Measurements
	if err := json.Unmarshal(rec.Measurements, &m); err != nil {
		t.Fatalf("%s: stored measurements: %v", v.Host, err)
	}
	if v.Policy == "" {
		if v.Level != verdict.Untrusted || !hasCode(v.Reasons, verdict.CodeNoPolicy) {
			t.Errorf("%s: %s %v with no policy named, want untrusted %s", v.Host, v.Level, v.Reasons, verdict.CodeNoPolicy)
		}
		return
	}
	p, refs, err := versionsOf(ctx, st, v.Policy)
	if err != nil {
		t.Errorf("%s: the verdict names %q: %v", v.Host, v.Policy, err)
		return
	}
	r := policy.Evaluate(p, refs, &m)
	var want, got []string
	for _, x := range r.Reasons {
		want = append(want, x.Code)
	}
	for _, x := range v.Reasons {
		got = append(got, x.Code)
	}
	if r.Level != v.Level || !slices.Equal(want, got) {
		t.Errorf("%s: stored %s %v under %q, its evidence gives %s %v", v.Host, v.Level, got, v.Policy, r.Level, want)
	}
}

// versionsOf loads the policy and reference versions a verdict's label
// (policy.Label: "name@vN ref@vM ...") names.
func versionsOf(ctx context.Context, st *store.Store, label string) (*policy.Policy, map[string]*policy.Reference, error) {
	fields := strings.Fields(label)
	name, version, err := parseVersion(fields[0])
	if err != nil {
		return nil, nil, err
	}
	sp, err := st.GetPolicy(ctx, name, version)
	if err != nil {
		return nil, nil, err
	}
	var p policy.Policy
	if err := json.Unmarshal(sp.Body, &p); err != nil {
		return nil, nil, err
	}
	p.Name, p.Version = sp.Name, sp.Version
	refs := map[string]*policy.Reference{}
	for _, f := range fields[1:] {
		name, version, err := parseVersion(f)
		if err != nil {
			return nil, nil, err
		}
		sr, err := st.GetReference(ctx, name, version)
		if err != nil {
			return nil, nil, err
		}
		var r policy.Reference
		if err := json.Unmarshal(sr.Body, &r); err != nil {
			return nil, nil, err
		}
		r.Name, r.Version = sr.Name, sr.Version
		refs[r.Name] = &r
	}
	return &p, refs, nil
}

func parseVersion(s string) (string, int, error) {
	name, v, ok := strings.Cut(s, "@v")
	n, err := strconv.Atoi(v)
	if !ok || err != nil {
		return "", 0, fmt.Errorf("%q is not name@vN", s)
	}
	return name, n, nil
}

// checkAudit verifies the audit log's hash chain up to its stored head, that
// every acknowledged change has its entry, and that every stored version of
// a reference or policy was audited.
func checkAudit(t *testing.T, st *store.Store, subjects []string) {
	t.Helper()
	ctx := context.Background()
	entries, err := st.ListAudit(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.VerifyChain(entries); err != nil {
		t.Errorf("audit chain: %v", err)
	}
	seq, head, err := st.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(entries); n == 0 || entries[n-1].Seq != seq || !bytes.Equal(entries[n-1].Hash, head) {
		t.Errorf("audit head %d %x does not match the last of %d entries", seq, head, n)
	}
	have := map[string]bool{}
	for _, e := range entries {
		have[e.Subject] = true
	}
	for _, s := range subjects {
		if !have[s] {
			t.Errorf("acknowledged change %s has no audit entry", s)
		}
	}
	refs, err := st.ListReferences(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		for v := 1; v <= r.Version; v++ {
			if s := fmt.Sprintf("%s@v%d", r.Name, v); !have[s] {
				t.Errorf("reference version %s is stored but was never audited", s)
			}
		}
	}
	pols, err := st.ListPolicies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pols {
		for v := 1; v <= p.Version; v++ {
			if s := fmt.Sprintf("%s@v%d", p.Name, v); !have[s] {
				t.Errorf("policy version %s is stored but was never audited", s)
			}
		}
	}
}
