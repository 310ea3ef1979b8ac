package integrity

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"trustpool/internal/appraisal"
	"trustpool/internal/evidence"
	"trustpool/internal/knowngood"
	"trustpool/internal/policy"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

// fakeClock is an injected clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// agents answers challenges from in-process simulated nodes; a node may be
// made unreachable, or made to answer with recorded evidence (a replay).
type agents struct {
	mu       sync.Mutex
	nodes    map[string]*verifytest.Node
	down     map[string]bool
	replay   map[string]*evidence.Evidence
	last     map[string]*evidence.Evidence
	lastSent map[string]*evidence.Challenge
	// answering, when set, runs while a challenge is being answered.
	answering func()
}

func (a *agents) Challenge(_ context.Context, h store.Host, c *evidence.Challenge) (*evidence.Evidence, error) {
	if a.answering != nil {
		a.answering()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.down[h.Name] {
		return nil, errors.New("dial tcp: connection refused")
	}
	a.lastSent[h.Name] = c
	if ev := a.replay[h.Name]; ev != nil {
		return ev, nil
	}
	ev, err := a.nodes[h.Name].EvidenceFor(c.Nonce, c.Selection)
	a.last[h.Name] = ev
	return ev, err
}

type fixture struct {
	svc    *Service
	store  *store.Store
	agents *agents
	clock  *fakeClock
	path   string
}

func newFixture(t testing.TB, hosts ...string) *fixture {
	return newFixtureAlg(t, verifytest.RSA2048, hosts...)
}

func newFixtureAlg(t testing.TB, alg verifytest.Alg, hosts ...string) *fixture {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "t.db")
	st, err := store.Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ag := &agents{nodes: map[string]*verifytest.Node{}, down: map[string]bool{}, replay: map[string]*evidence.Evidence{},
		last: map[string]*evidence.Evidence{}, lastSent: map[string]*evidence.Challenge{}}
	for _, h := range hosts {
		n, err := verifytest.NewNode(alg, h)
		if err != nil {
			t.Fatal(err)
		}
		n.EventLog = verifytest.BootLog("same-model").Bytes() // identical machines
		ag.nodes[h] = n
		if err := st.PutHost(ctx, store.Host{Name: h, State: store.HostActive, EKPublic: []byte("ek-" + h), AKPublic: n.AK.Public(), AKName: n.AK.Name(), URL: "https://" + h}); err != nil {
			t.Fatal(err)
		}
	}
	clock := &fakeClock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	f := &fixture{store: st, agents: ag, clock: clock, path: path}
	f.svc = f.newService()
	return f
}

func (f *fixture) newService() *Service {
	return New(Config{Interval: 30 * time.Second, Now: f.clock.Now, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, f.store, f.agents)
}

// golden makes host's current measurements the known-good values.
func (f *fixture) golden(t testing.TB, host string) {
	t.Helper()
	ctx := context.Background()
	if _, err := f.svc.Attest(ctx, host); err != nil {
		t.Fatal(err)
	}
	rec, err := f.store.LatestEvidence(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := DecodeEvidence(rec.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	ak, _ := verify.ParseAK(f.agents.nodes[host].AK.Public())
	res := ak.Verify(verify.Input{Nonce: rec.Nonce, Evidence: ev})
	if !res.OK() {
		t.Fatalf("stored evidence does not verify: %v", res.Reasons)
	}
	refs, err := policy.Golden("g", 1, &res.Measurements, nil)
	if err != nil {
		t.Fatal(err)
	}
	kg := &knowngood.Set{Policies: map[string]*policy.Policy{"default": policy.Approve(nil, "default", refs)}, Refs: map[string]*policy.Reference{}}
	for _, r := range refs {
		kg.Refs[r.Name] = r
	}
	if _, err := f.svc.SetKnownGood(ctx, kg); err != nil {
		t.Fatal(err)
	}
}

func codes(v verdict.Verdict) []string {
	var out []string
	for _, r := range v.Reasons {
		out = append(out, r.Code)
	}
	return out
}

func TestAttestTrustedAndReplay(t *testing.T) {
	f := newFixture(t, "node1", "node2")
	ctx := context.Background()
	f.golden(t, "node1")
	for _, h := range []string{"node1", "node2"} {
		v, err := f.svc.Attest(ctx, h)
		if err != nil || v.Level != verdict.Trusted {
			t.Fatalf("%s: %+v %v, want trusted", h, v, err)
		}
	}
	// node2 answers the next challenge with its previous evidence.
	f.agents.replay["node2"] = f.agents.last["node2"]
	v, _ := f.svc.Attest(ctx, "node2")
	if v.Level != verdict.Untrusted || codes(v)[0] != verdict.CodeNonce {
		t.Fatalf("replayed quote: %+v, want untrusted %s", v, verdict.CodeNonce)
	}
	// node2 answers with a fresh quote from node1's AK.
	f.agents.replay["node2"] = nil
	f.agents.nodes["node2"], f.agents.nodes["node1"] = f.agents.nodes["node1"], f.agents.nodes["node2"]
	v, _ = f.svc.Attest(ctx, "node2")
	if v.Level != verdict.Untrusted || codes(v)[0] != verdict.CodeSignature {
		t.Fatalf("quote by another host's AK: %+v, want untrusted %s", v, verdict.CodeSignature)
	}
}

func TestNonceIsUsedOnce(t *testing.T) {
	f := newFixture(t, "node1", "node2")
	f.golden(t, "node1")
	ak, _ := verify.ParseAK(f.agents.nodes["node1"].AK.Public())
	kg := f.svc.KnownGood()
	h, _ := f.store.GetHost(context.Background(), "node1")
	sel := appraisal.Selection(kg, hostOf(h), collect)
	nonce := f.svc.nonces.issue("node1", f.clock.Now().Add(time.Minute))
	ev, err := f.agents.nodes["node1"].EvidenceFor(nonce, sel)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := f.svc.Verify(h, ak, nonce, kg, ev); v.Level != verdict.Trusted {
		t.Fatalf("first use: %+v", v)
	}
	if v, _ := f.svc.Verify(h, ak, nonce, kg, ev); v.Level != verdict.Untrusted || codes(v)[0] != verdict.CodeNonceReused {
		t.Fatalf("second use of the nonce: %+v, want %s", v, verdict.CodeNonceReused)
	}
	other := f.svc.nonces.issue("node2", f.clock.Now().Add(time.Minute))
	if v, _ := f.svc.Verify(h, ak, other, kg, ev); codes(v)[0] != verdict.CodeNonceReused {
		t.Fatalf("nonce issued to another host: %+v, want %s", v, verdict.CodeNonceReused)
	}
	late := f.svc.nonces.issue("node1", f.clock.Now().Add(time.Second))
	f.clock.Add(2 * time.Second)
	if v, _ := f.svc.Verify(h, ak, late, kg, ev); codes(v)[0] != verdict.CodeNonceReused {
		t.Fatalf("expired challenge: %+v, want %s", v, verdict.CodeNonceReused)
	}
}

func TestUnreachableIsUnknown(t *testing.T) {
	f := newFixture(t, "node1")
	f.golden(t, "node1")
	f.agents.down["node1"] = true
	v, err := f.svc.Attest(context.Background(), "node1")
	if err != nil || v.Level != verdict.Unknown || codes(v)[0] != verdict.CodeUnreachable || !unreachable(v) {
		t.Fatalf("unreachable: %+v %v, want unknown %s", v, err, verdict.CodeUnreachable)
	}
}

func TestRestartServesPersistedVerdictsUntilExpiry(t *testing.T) {
	f := newFixture(t, "node1")
	f.golden(t, "node1")
	want, _ := f.svc.Attest(context.Background(), "node1")
	// A new service on the same store, as after a restart.
	restarted := f.newService()
	if err := restarted.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, ok := restarted.Cache().Verdict("node1")
	if !ok || got.Level != verdict.Trusted || !got.VTime.Equal(want.VTime) || restarted.Cache().Level("node1") != verdict.Trusted {
		t.Fatalf("after restart: %+v, want the persisted trusted verdict of %v", got, want.VTime)
	}
	f.clock.Add(restarted.cfg.Validity)
	if lvl := restarted.Cache().Level("node1"); lvl != verdict.Unknown {
		t.Fatalf("past expiry: %s, want unknown", lvl)
	}
}

func TestHelloAttestsAtOnce(t *testing.T) {
	f := newFixture(t, "node1")
	f.svc.cfg.Interval = time.Hour
	changes := make(chan verdict.Verdict, 4)
	f.svc.Recorder().OnChange(func(v verdict.Verdict, _ verdict.Level) { changes <- v })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	f.svc.Hello("node1")
	select {
	case v := <-changes:
		if v.Host != "node1" {
			t.Fatalf("change for %s", v.Host)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no attestation after hello")
	}
}

// The fast path of re-evaluation (PCR values only) decides exactly as the
// full measurements do.
func TestReevaluateFastPathAgrees(t *testing.T) {
	f := newFixture(t, "node1", "node2")
	f.golden(t, "node1")
	f.agents.nodes["node2"].EventLog = verifytest.BootLog("other-model").Bytes()
	ctx := context.Background()
	for _, h := range []string{"node1", "node2"} {
		if _, err := f.svc.Attest(ctx, h); err != nil {
			t.Fatal(err)
		}
		rec, err := f.store.LatestEvidence(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		host, _ := f.store.GetHost(ctx, h)
		kg := f.svc.KnownGood()
		m, err := verify.UnmarshalMeasurements(rec.Measurements)
		if err != nil {
			t.Fatal(err)
		}
		full := appraisal.Judge(h, kg, kg.PolicyFor(host.Policy, host.Labels), &m, rec.VerifiedAt, f.svc.cfg.Validity)
		fast, err := appraisal.JudgeStored(hostOf(host), kg, rec.Measurements, rec.VerifiedAt, f.svc.cfg.Validity)
		if err != nil || !reflect.DeepEqual(full, fast) {
			t.Fatalf("%s: fast path %+v, full %+v (%v)", h, fast, full, err)
		}
	}
}

// An attestation in flight when the known-good values change is judged by
// the new values: a retired reference cannot be resurrected by a quote that
// was requested before the retirement.
func TestAttestationJudgedByValuesInForce(t *testing.T) {
	f := newFixture(t, "node1")
	f.golden(t, "node1")
	ctx := context.Background()
	f.agents.answering = func() {
		f.agents.answering = nil
		if _, err := f.svc.SetKnownGood(ctx, &knowngood.Set{}); err != nil { // everything retired
			t.Error(err)
		}
	}
	v, err := f.svc.Attest(ctx, "node1")
	if err != nil || v.Level != verdict.Untrusted || codes(v)[0] != verdict.CodeNoPolicy {
		t.Fatalf("attestation across a change: %+v %v, want untrusted %s", v, err, verdict.CodeNoPolicy)
	}
	if lvl := f.svc.Cache().Level("node1"); lvl != verdict.Untrusted {
		t.Fatalf("cache says %s", lvl)
	}
}
