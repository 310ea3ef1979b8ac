package tamper_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/integrity"
	"trustpool/internal/knowngood"
	"trustpool/internal/policy"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

// racingStore is a real store with one attestation slipped in just before a
// re-evaluation writes its verdicts: the interleaving a known-good change
// meets when a node reboots at that moment (the crash test's storm finds it
// by chance; this makes it certain).
type racingStore struct {
	*store.Store
	mu     sync.Mutex // guards during
	during func()     // run once, before the first re-evaluated verdict is written
}

func (s *racingStore) fire() {
	s.mu.Lock()
	f := s.during
	s.during = nil
	s.mu.Unlock()
	if f != nil {
		f()
	}
}

// RecordVerdicts catches a re-evaluation (records without evidence) and
// passes attestations through.
func (s *racingStore) RecordVerdicts(ctx context.Context, recs []store.Record, then store.Consequences) ([]store.Recorded, error) {
	if len(recs) > 0 && recs[0].Evidence == nil {
		s.fire()
	}
	return s.Store.RecordVerdicts(ctx, recs, then)
}

// simNodes answers challenges in process from simulated nodes.
type simNodes struct {
	mu sync.Mutex // guards m and the nodes' fields
	m  map[string]*verifytest.Node
}

func (n *simNodes) Challenge(_ context.Context, h store.Host, c *evidence.Challenge) (*evidence.Evidence, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m[h.Name].EvidenceFor(c.Nonce, c.Selection)
}

// TestReevaluationKeepsNewerEvidence: a known-good change re-evaluates the
// stored evidence of every host; meanwhile node1 reboots with a tampered
// hypervisor and is attested (untrusted, its tampered evidence stored). The
// re-evaluation must not then write node1's older, clean evidence's
// verdict over the newer one: the host must stay untrusted, and its stored
// verdict must judge its stored evidence.
func TestReevaluationKeepsNewerEvidence(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	node := identicalNode(t)
	if err := st.PutHost(ctx, store.Host{Name: "node1", State: store.HostActive, EKPublic: []byte("ek"),
		AKPublic: node.AK.Public(), AKName: node.AK.Name(), URL: "https://node1.invalid"}); err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	nodes := &simNodes{m: map[string]*verifytest.Node{"node1": node}}
	rs := &racingStore{Store: st}
	svc := integrity.New(integrity.Config{Interval: time.Hour, Now: clk.Now, Log: slog.New(slog.DiscardHandler)}, rs, nodes)

	// node1's clean evidence becomes the known-good values.
	if _, err := svc.Attest(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	rec, err := st.LatestEvidence(ctx, "node1")
	if err != nil {
		t.Fatal(err)
	}
	m, err := verify.UnmarshalMeasurements(rec.Measurements)
	if err != nil {
		t.Fatal(err)
	}
	refs, err := policy.Golden("golden", 1, &m, nil)
	if err != nil {
		t.Fatal(err)
	}
	kg := &knowngood.Set{Policies: map[string]*policy.Policy{}, Refs: map[string]*policy.Reference{}}
	p := policy.Approve(nil, policy.DefaultName, refs)
	p.Version = 1
	kg.Policies[p.Name] = p
	for _, r := range refs {
		kg.Refs[r.Name] = r
	}

	tampered := editLog(t, node.DRTMLog, func(es []eventlog.Event) []eventlog.Event {
		i := lastOf(t, es, 18, "kvm-6.1.0-28-amd64")
		es[i].Digests = digestsLike(es[i], "kvm-6.1.0-28-amd64 with a backdoor")
		return es
	})
	// The reboot is attested while the re-evaluation is being written: the
	// agent answers then, and the service records the verdict once the
	// change is in (recording waits for a known-good change to finish).
	attested := make(chan verdict.Verdict, 1)
	rs.mu.Lock()
	rs.during = func() {
		clk.Add(time.Second)
		nodes.mu.Lock()
		node.DRTMLog = tampered
		nodes.mu.Unlock()
		go func() {
			v, err := svc.Attest(ctx, "node1")
			if err != nil {
				t.Error(err)
			}
			attested <- v
		}()
	}
	rs.mu.Unlock()
	if _, err := svc.SetKnownGood(ctx, kg); err != nil {
		t.Fatal(err)
	}
	rebooted := <-attested
	if rebooted.Level != verdict.Untrusted {
		t.Fatalf("the tampered reboot was attested %s %v, want untrusted", rebooted.Level, reasonCodes(rebooted.Reasons))
	}

	if lvl := svc.Cache().Level("node1"); lvl != verdict.Untrusted {
		v, _ := svc.Cache().Verdict("node1")
		t.Errorf("after the re-evaluation node1 reads %s (verdict of %s), want untrusted: the tampered attestation of %s was overwritten by a verdict on older evidence",
			lvl, v.VTime, rebooted.VTime)
	}
	vs, err := st.LatestVerdicts(ctx)
	if err != nil || len(vs) != 1 {
		t.Fatalf("latest verdicts: %v %v", vs, err)
	}
	if rec, err = st.LatestEvidence(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	if vs[0].Level != verdict.Untrusted || vs[0].VTime.Before(rec.VerifiedAt) {
		t.Errorf("stored verdict %s at %s, stored evidence verified at %s (tampered): the verdict does not judge the evidence kept",
			vs[0].Level, vs[0].VTime, rec.VerifiedAt)
	}
}
