package integrity

import (
	"context"
	"sync"
	"testing"
	"time"

	"trustpool/internal/verdict"
	"trustpool/internal/verify/verifytest"
)

// The server's clock steps back an hour after node1 was trusted; node1
// then reboots tampered. The untrusted verdict must stand at once, in the
// cache and the store: verdicts are ordered by attestation, not by time.
func TestClockStepsBack(t *testing.T) {
	f := newFixture(t, "node1")
	f.golden(t, "node1")
	ctx := context.Background()
	f.clock.Add(-time.Hour)
	f.agents.mu.Lock()
	f.agents.nodes["node1"].EventLog = verifytest.BootLog("tampered").Bytes()
	f.agents.mu.Unlock()
	v, err := f.svc.Attest(ctx, "node1")
	if err != nil || v.Level != verdict.Untrusted {
		t.Fatalf("attest after the step: %s %v", v.Level, err)
	}
	if lvl := f.svc.Cache().Level("node1"); lvl != verdict.Untrusted {
		t.Fatalf("cache reads %s after the clock stepped back, want untrusted", lvl)
	}
	vs, err := f.store.LatestVerdicts(ctx)
	if err != nil || len(vs) != 1 || vs[0].Level != verdict.Untrusted {
		t.Fatalf("store holds %+v %v, want untrusted", vs, err)
	}
}

// blockFirst makes the first challenge wait until release is closed.
func blockFirst(a *agents) (started, release chan struct{}) {
	started, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	a.answering = func() {
		first := false
		once.Do(func() { first = true })
		if first {
			close(started)
			<-release
		}
	}
	return started, release
}

// Two attestations of node1 race: the older one (challenged first) answers
// last with clean evidence, after the newer one recorded a tampered boot.
// The older one must never replace the newer verdict.
func TestOlderAttestationNeverWins(t *testing.T) {
	f := newFixture(t, "node1")
	f.golden(t, "node1")
	ctx := context.Background()
	clean := f.agents.nodes["node1"].EventLog
	started, release := blockFirst(f.agents)
	older := make(chan verdict.Verdict)
	go func() {
		v, err := f.svc.Attest(ctx, "node1")
		if err != nil {
			t.Error(err)
		}
		older <- v
	}()
	<-started
	f.agents.mu.Lock()
	f.agents.nodes["node1"].EventLog = verifytest.BootLog("tampered").Bytes()
	f.agents.mu.Unlock()
	newer, err := f.svc.Attest(ctx, "node1")
	if err != nil || newer.Level != verdict.Untrusted {
		t.Fatalf("newer attestation: %s %v", newer.Level, err)
	}
	f.agents.mu.Lock()
	f.agents.nodes["node1"].EventLog = clean
	f.agents.mu.Unlock()
	close(release)
	if v := <-older; v.Level != verdict.Untrusted || v.Seq != newer.Seq {
		t.Fatalf("the older attestation answered %s of seq %d, want the newer verdict that stands (seq %d)", v.Level, v.Seq, newer.Seq)
	}
	if v, _ := f.svc.Cache().Verdict("node1"); v.Level != verdict.Untrusted || v.Seq != newer.Seq {
		t.Fatalf("cache holds %s of seq %d, want the newer untrusted verdict (seq %d)", v.Level, v.Seq, newer.Seq)
	}
	vs, _ := f.store.LatestVerdicts(ctx)
	if len(vs) != 1 || vs[0].Level != verdict.Untrusted {
		t.Fatalf("store holds %+v, want the newer untrusted verdict", vs)
	}
}

// A host deleted while its attestation is in flight stays deleted: the
// late verdict reaches neither the store nor the cache.
func TestDeleteDuringAttestation(t *testing.T) {
	f := newFixture(t, "node1")
	f.golden(t, "node1")
	ctx := context.Background()
	started, release := blockFirst(f.agents)
	done := make(chan error)
	go func() { _, err := f.svc.Attest(ctx, "node1"); done <- err }()
	<-started
	if err := f.svc.Remove(ctx, "node1", "admin"); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-done; err == nil {
		t.Fatal("the attestation of a deleted host was recorded")
	}
	if _, ok := f.svc.Cache().Verdict("node1"); ok {
		t.Fatal("the deleted host is back in the cache")
	}
	if vs, _ := f.store.LatestVerdicts(ctx); len(vs) != 0 {
		t.Fatalf("the store holds verdicts of a deleted host: %+v", vs)
	}
	es, _ := f.store.ListAudit(ctx, 0, 100)
	if len(es) == 0 || es[len(es)-1].Action != "host.delete" {
		t.Fatalf("no host.delete audit entry last: %+v", es)
	}
}

// A verdict that expires becomes unknown through the recorder, within a
// tick: the listeners hear of it, the store records it with its reason
// and an audit entry.
func TestExpiryIsATransition(t *testing.T) {
	f := newFixture(t, "node1")
	f.golden(t, "node1")
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan [2]verdict.Level, 4)
	f.svc.Recorder().OnChange(func(v verdict.Verdict, prev verdict.Level) { changes <- [2]verdict.Level{prev, v.Level} })
	done := make(chan error)
	go func() { done <- f.svc.Recorder().Run(ctx) }()
	defer func() { cancel(); <-done }()
	f.clock.Add(f.svc.cfg.Validity)
	select {
	case c := <-changes:
		if c != [2]verdict.Level{verdict.Trusted, verdict.Unknown} {
			t.Fatalf("transition %v, want trusted → unknown", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no transition at expiry")
	}
	vs, _ := f.store.LatestVerdicts(ctx)
	if len(vs) != 1 || vs[0].Level != verdict.Unknown || len(vs[0].Reasons) != 1 || vs[0].Reasons[0].Code != verdict.CodeExpired {
		t.Fatalf("stored %+v, want unknown with %s", vs, verdict.CodeExpired)
	}
	es, _ := f.store.ListAudit(ctx, 0, 100)
	if len(es) == 0 || es[len(es)-1].Action != "verdict.change" {
		t.Fatalf("no verdict.change audit entry for the expiry: %+v", es)
	}
}

// A verdict that expired while the server was down is recorded as expired
// when it starts again.
func TestExpiredWhileDown(t *testing.T) {
	f := newFixture(t, "node1")
	f.golden(t, "node1")
	ctx := context.Background()
	f.clock.Add(f.svc.cfg.Validity + time.Minute)
	restarted := f.newService()
	if err := restarted.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := restarted.Recorder().ExpireDue(ctx); err != nil {
		t.Fatal(err)
	}
	vs, _ := f.store.LatestVerdicts(ctx)
	if len(vs) != 1 || vs[0].Level != verdict.Unknown || vs[0].Reasons[0].Code != verdict.CodeExpired {
		t.Fatalf("after the restart the store holds %+v, want the expiry recorded", vs)
	}
}
