package integrity

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/knowngood"
	"trustpool/internal/policy"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

// BenchmarkReevaluate measures applying a known-good change to 10,000
// hosts' stored evidence: read every host's evidence, evaluate, persist.
func BenchmarkReevaluate(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			ctx := context.Background()
			st, err := store.Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "b.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			node, _ := verifytest.NewNode(verifytest.RSA2048, "bench")
			ak, _ := verify.ParseAK(node.AK.Public())
			nonce := make([]byte, 32)
			ev, _ := node.EvidenceFor(nonce, []evidence.Selection{collect})
			res := ak.Verify(verify.Input{Nonce: nonce, Evidence: ev})
			if !res.OK() {
				b.Fatal(res.Reasons)
			}
			now := time.Now().UTC().Truncate(time.Microsecond)
			for i := range n {
				h := fmt.Sprintf("node%05d", i)
				// Each host's stored measurements differ (as host-unique
				// event data does), so nothing can be shared between hosts.
				res.Measurements.Events[0].Data = []byte("S-CRTM of " + h)
				mJSON, _ := verify.MarshalMeasurements(&res.Measurements)
				st.PutHost(ctx, store.Host{Name: h, State: store.HostActive, EKPublic: []byte(h), AKPublic: node.AK.Public(), URL: "https://x"})
				st.PutVerdict(ctx, verdict.Verdict{Host: h, Level: verdict.Untrusted, VTime: now, Expiry: now.Add(time.Hour)},
					&store.EvidenceRecord{Host: h, Evidence: []byte("{}"), Nonce: nonce, Measurements: mJSON, VerifiedAt: now})
			}
			svc := New(Config{Now: func() time.Time { return now }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, st, nil)
			if err := svc.Load(ctx); err != nil {
				b.Fatal(err)
			}
			refs, _ := policy.Golden("g", 1, &res.Measurements, nil)
			trusting := &knowngood.Set{Policies: map[string]*policy.Policy{"default": policy.Approve(nil, "default", refs)}, Refs: map[string]*policy.Reference{}}
			for _, r := range refs {
				trusting.Refs[r.Name] = r
			}
			empty := &knowngood.Set{}
			b.ResetTimer()
			cpu := cpuTime(b)
			for i := range b.N {
				kg := trusting
				if i%2 == 1 {
					kg = empty
				}
				changes, err := svc.SetKnownGood(ctx, kg)
				if err != nil || len(changes) != n {
					b.Fatalf("%d changes, %v", len(changes), err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/change")
			// The process's CPU time is what a loaded machine inflates least.
			b.ReportMetric(float64((cpuTime(b)-cpu).Milliseconds())/float64(b.N), "cpu-ms/change")
		})
	}
}

// cpuTime is the CPU time the process has used so far (user and system,
// every thread).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAttest measures the server's side of a steady-state attestation
// without the network: number it, decode the agent's answer, verify the
// quote and event log, appraise them against the known-good values and
// record the verdict (measurements unchanged: the evidence row is only
// touched). The node's answer is left out (the timer stops while it signs
// and encodes, and its CPU is taken off), so cpu-ms/op is what the server
// spends besides the agent connection (TLS and HTTP).
func BenchmarkAttest(b *testing.B) {
	hosts := make([]string, 100)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("node%03d", i)
	}
	f := newFixtureAlg(b, verifytest.P256, hosts...)
	f.golden(b, hosts[0])
	ctx := context.Background()
	for _, h := range hosts {
		if v, err := f.svc.Attest(ctx, h); err != nil || v.Level != verdict.Trusted {
			b.Fatalf("%s: %s %v", h, v.Level, err)
		}
	}
	answers := &timedAgents{b: b, agents: f.agents}
	f.svc.agents = answers
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime(b)
	for i := range b.N {
		if v, err := f.svc.Attest(ctx, hosts[i%len(hosts)]); err != nil || v.Level != verdict.Trusted {
			b.Fatalf("%s %v", v.Level, err)
		}
	}
	cpu := cpuTime(b) - start - answers.cpu
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// timedAgents answers as agents do, encoded as an agent sends it, with
// the benchmark's timer stopped, and sums the CPU the answers took; the
// server's decoding is timed.
type timedAgents struct {
	b      *testing.B
	agents *agents
	cpu    time.Duration
}

func (a *timedAgents) Challenge(ctx context.Context, h store.Host, c *evidence.Challenge) (*evidence.Evidence, error) {
	a.b.StopTimer()
	start := cpuTime(a.b)
	doc, err := a.answer(ctx, h, c)
	a.cpu += cpuTime(a.b) - start
	a.b.StartTimer()
	if err != nil {
		return nil, err
	}
	return DecodeEvidence(doc)
}

// answer is the agent's answer to c, encoded.
func (a *timedAgents) answer(ctx context.Context, h store.Host, c *evidence.Challenge) ([]byte, error) {
	ev, err := a.agents.Challenge(ctx, h, c)
	if err != nil {
		return nil, err
	}
	return json.Marshal(ev)
}
