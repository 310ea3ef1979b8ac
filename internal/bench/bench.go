// Package bench is `trustpool bench`: it measures the server's hot paths on
// this machine with realistic simulated evidence and prints the figures
// BENCHMARKS.md records. Wall-clock figures depend on the machine and its
// load; the command prints what it ran on.
package bench

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/filter"
	"trustpool/internal/fleetsim"
	"trustpool/internal/integrity"
	"trustpool/internal/knowngood"
	"trustpool/internal/nova"
	"trustpool/internal/policy"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
)

// Config says how long each measurement runs and how large the fleet is.
type Config struct {
	Duration time.Duration // per throughput measurement (default 3 s)
	Hosts    int           // hosts in the verdict cache and store (default 10,000)
	Dir      string        // scratch directory for the SQLite store
	// Progress, when set, is told each figure as its measurement starts
	// (done of total figures measured).
	Progress func(stage string, done, total int)
}

// Results are the figures of `trustpool bench`, as --output json prints
// them (durations in microseconds or milliseconds, as named).
type Results struct {
	OS         string  `json:"os"`
	Arch       string  `json:"arch"`
	CPUs       int     `json:"cpus"`
	GOMAXPROCS int     `json:"gomaxprocs"`
	DurationS  float64 `json:"duration_s"` // per throughput figure
	Hosts      int     `json:"hosts"`
	// Verify is full verification with policy evaluation, per AK kind.
	Verify []VerifyRate `json:"verify"`
	// PollHosts is PollHosts of 1,000 names and of Hosts names, server side.
	PollHosts []QueryLatency `json:"pollhosts"`
	Filter    QueryLatency   `json:"filter"` // filter.Filter of 1,000 candidates
	// RestartMs is the verdict cache rebuilt from SQLite for Hosts hosts.
	RestartMs        float64 `json:"restart_ms"`
	HeapPerVerdictB  float64 `json:"heap_bytes_per_verdict"`
	ReevaluateMs     float64 `json:"reevaluate_ms"` // a known-good change re-evaluated over Hosts hosts
	ReevaluatedHosts int     `json:"reevaluated_hosts"`
}

// VerifyRate is the full verification rate of one AK kind beside the bare
// signature rate of the same key.
type VerifyRate struct {
	AK       string  `json:"ak"`
	HostsPS  float64 `json:"hosts_per_s"`
	BarePS   float64 `json:"bare_signatures_per_s"`
	ShareOfB float64 `json:"share_of_bare"`
}

// QueryLatency is a scheduler query's latency percentiles.
type QueryLatency struct {
	Names int     `json:"names"`
	P50us float64 `json:"p50_us"`
	P99us float64 `json:"p99_us"`
}

// Run measures every figure.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if cfg.Duration <= 0 {
		cfg.Duration = 3 * time.Second
	}
	if cfg.Hosts <= 0 {
		cfg.Hosts = 10000
	}
	const figures = 7
	done := 0
	step := func(what string) {
		if cfg.Progress != nil {
			cfg.Progress("measuring "+what+", figure", done, figures)
		}
		done++
	}
	r := &Results{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		DurationS: cfg.Duration.Seconds(), Hosts: cfg.Hosts, ReevaluatedHosts: cfg.Hosts}
	for _, alg := range []fleetsim.Alg{fleetsim.RSA2048, fleetsim.P256} {
		step("verification " + alg.String())
		full, bare, err := verifyRates(cfg.Duration, alg)
		if err != nil {
			return nil, err
		}
		r.Verify = append(r.Verify, VerifyRate{AK: alg.String(), HostsPS: full, BarePS: bare, ShareOfB: full / bare})
	}
	f, err := newFleet(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer f.st.Close()
	small := min(1000, cfg.Hosts) // a scheduler's request, within the fleet
	for _, n := range []int{small, cfg.Hosts} {
		step(fmt.Sprintf("PollHosts of %d names", n))
		p50, p99 := f.pollHosts(n, cfg.Duration)
		r.PollHosts = append(r.PollHosts, QueryLatency{Names: n, P50us: micro(p50), P99us: micro(p99)})
	}
	step("filter")
	p50, p99 := f.filter(small, cfg.Duration)
	r.Filter = QueryLatency{Names: small, P50us: micro(p50), P99us: micro(p99)}
	step("restart")
	d, perHost, err := f.restart(ctx)
	if err != nil {
		return nil, err
	}
	r.RestartMs, r.HeapPerVerdictB = milli(d), perHost
	step("re-evaluation")
	if d, err = f.reevaluate(ctx); err != nil {
		return nil, err
	}
	r.ReevaluateMs = milli(d)
	if cfg.Progress != nil {
		cfg.Progress("measuring, figure", figures, figures)
	}
	return r, nil
}

func micro(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
func milli(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// WriteTable prints the figures for people, with what each measures.
func (r *Results) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "trustpool bench: %s/%s, %d CPUs (GOMAXPROCS %d), %s per throughput figure\n\n",
		r.OS, r.Arch, r.CPUs, r.GOMAXPROCS, time.Duration(r.DurationS*float64(time.Second)))
	fmt.Fprintln(tw, "what\tfigure\tnote")
	for _, v := range r.Verify {
		fmt.Fprintf(tw, "full verification + policy, %s\t%.0f hosts/s\tsignature, nonce, selection, PCR digest, replay of 51 events, policy; %.0f%% of the bare signature rate (%.0f/s)\n",
			v.AK, v.HostsPS, 100*v.ShareOfB, v.BarePS)
	}
	us := func(f float64) time.Duration { return time.Duration(f * 1e3) }
	for _, q := range r.PollHosts {
		fmt.Fprintf(tw, "PollHosts, %d names\tp50 %s, p99 %s\tserver side, answered from the verdict cache\n", q.Names, us(q.P50us), us(q.P99us))
	}
	fmt.Fprintf(tw, "filter, %d candidates\tp50 %s, p99 %s\tfilter.Filter over the cache\n", r.Filter.Names, us(r.Filter.P50us), us(r.Filter.P99us))
	ms := func(f float64) time.Duration { return time.Duration(f * 1e6).Round(time.Millisecond) }
	fmt.Fprintf(tw, "restart: cache rebuilt from SQLite, %d hosts\t%s\t%.0f bytes of heap per cached verdict\n", r.Hosts, ms(r.RestartMs), r.HeapPerVerdictB)
	fmt.Fprintf(tw, "known-good change re-evaluated, %d hosts\t%s\tevery host's stored evidence, one transaction\n", r.ReevaluatedHosts, ms(r.ReevaluateMs))
	return tw.Flush()
}

// verifyRates runs full verification with policy evaluation, and the bare
// signature check of the same key, on every CPU for d.
func verifyRates(d time.Duration, alg fleetsim.Alg) (full, bare float64, err error) {
	node, err := fleetsim.NewNode(alg, "bench")
	if err != nil {
		return 0, 0, err
	}
	ak, err := verify.ParseAK(node.AK.Public())
	if err != nil {
		return 0, 0, err
	}
	nonce := bytes.Repeat([]byte{7}, 32)
	ev, err := node.Evidence(nonce)
	if err != nil {
		return 0, 0, err
	}
	in := verify.Input{Nonce: nonce, Required: node.Selection, Evidence: ev}
	res := ak.Verify(in)
	if !res.OK() {
		return 0, 0, fmt.Errorf("bench evidence does not verify: %v", res.Reasons)
	}
	refs, err := policy.Golden("bench", 1, &res.Measurements, nil)
	if err != nil {
		return 0, 0, err
	}
	pol := policy.Approve(nil, policy.DefaultName, refs)
	rm := map[string]*policy.Reference{}
	for _, r := range refs {
		rm[r.Name] = r
	}
	full = parallelRate(d, func() bool {
		r := ak.Verify(in)
		return r.OK() && policy.Evaluate(pol, rm, &r.Measurements).Level == verdict.Trusted
	})
	digest := sha256.Sum256(ev.Quote)
	sig, err := node.AK.Signer().Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		return 0, 0, err
	}
	pub := node.AK.Signer().Public()
	bare = parallelRate(d, func() bool {
		h := sha256.Sum256(ev.Quote)
		switch k := pub.(type) {
		case *rsa.PublicKey:
			return rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig) == nil
		case *ecdsa.PublicKey:
			return ecdsa.VerifyASN1(k, h[:], sig)
		}
		return false
	})
	return full, bare, nil
}

// parallelRate runs f on every CPU for d and returns calls per second; a
// call that returns false stops the count (a broken benchmark reads 0).
func parallelRate(d time.Duration, f func() bool) float64 {
	var n atomic.Int64
	var ok atomic.Bool
	ok.Store(true)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if !f() {
					ok.Store(false)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if !ok.Load() {
		return 0
	}
	return float64(n.Load()) / time.Since(start).Seconds()
}

// fleet is a store and integrity service holding cfg.Hosts hosts, each with
// a verdict and verified evidence.
type fleet struct {
	st    *store.Store
	svc   *integrity.Service
	names []string
	kg    *knowngood.Set
	now   time.Time
}

func newFleet(ctx context.Context, cfg Config) (*fleet, error) {
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(cfg.Dir, "bench.db"))
	if err != nil {
		return nil, err
	}
	node, err := fleetsim.NewNode(fleetsim.RSA2048, "bench")
	if err != nil {
		return nil, err
	}
	ak, _ := verify.ParseAK(node.AK.Public())
	nonce := bytes.Repeat([]byte{7}, 32)
	sel := []evidence.Selection{{Bank: evidence.SHA256, PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 18, 19}}}
	ev, err := node.EvidenceFor(nonce, sel)
	if err != nil {
		return nil, err
	}
	res := ak.Verify(verify.Input{Nonce: nonce, Evidence: ev})
	if !res.OK() {
		return nil, fmt.Errorf("bench evidence does not verify: %v", res.Reasons)
	}
	f := &fleet{st: st, now: time.Now().UTC().Truncate(time.Microsecond)}
	refs, err := policy.Golden("bench", 1, &res.Measurements, nil)
	if err != nil {
		return nil, err
	}
	f.kg = &knowngood.Set{Policies: map[string]*policy.Policy{policy.DefaultName: policy.Approve(nil, policy.DefaultName, refs)}, Refs: map[string]*policy.Reference{}}
	for _, r := range refs {
		f.kg.Refs[r.Name] = r
	}
	evJSON, _ := json.Marshal(ev)
	for i := range cfg.Hosts {
		h := fmt.Sprintf("compute-%05d.pool.example", i)
		f.names = append(f.names, h)
		if err := st.PutHost(ctx, store.Host{Name: h, State: store.HostActive, EKPublic: []byte(h), AKPublic: node.AK.Public(), URL: "https://" + h}); err != nil {
			return nil, err
		}
		res.Measurements.Events[0].Data = []byte("S-CRTM of " + h) // host-unique stored bytes
		m, _ := verify.MarshalMeasurements(&res.Measurements)
		v := verdict.Verdict{Host: h, Level: verdict.Untrusted, VTime: f.now, Expiry: f.now.Add(time.Hour)}
		if _, err := st.PutVerdict(ctx, v, &store.EvidenceRecord{Host: h, Evidence: evJSON, Nonce: nonce, Measurements: m, VerifiedAt: f.now}); err != nil {
			return nil, err
		}
	}
	f.svc = integrity.New(integrity.Config{Now: func() time.Time { return f.now }, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, st, nil)
	if err := f.svc.Load(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// pollHosts times PollHosts requests for n names for d.
func (f *fleet) pollHosts(n int, d time.Duration) (p50, p99 time.Duration) {
	h := nova.NewPollHosts(nova.PollHostsConfig{Now: func() time.Time { return f.now }}, f.svc.Cache())
	body, _ := json.Marshal(map[string]any{"count": n, "hosts": f.names[:n]})
	return latencies(d, func() {
		req := httptest.NewRequest(http.MethodPost, nova.PrefixNova+"/PollHosts", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(httptest.NewRecorder(), req)
	})
}

func (f *fleet) filter(n int, d time.Duration) (p50, p99 time.Duration) {
	specs := map[string]string{filter.ExtraSpec: "trusted"}
	return latencies(d, func() { filter.Filter(specs, f.names[:n], f.svc.Cache().Level) })
}

// restart times rebuilding the cache from the store, as a restarted server
// does, and the heap that cache holds per host.
func (f *fleet) restart(ctx context.Context) (time.Duration, float64, error) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	svc := integrity.New(integrity.Config{Now: func() time.Time { return f.now }}, f.st, nil)
	start := time.Now()
	if err := svc.Load(ctx); err != nil {
		return 0, 0, err
	}
	d := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(svc)
	return d, float64(after.HeapAlloc-before.HeapAlloc) / float64(len(f.names)), nil
}

// reevaluate times applying known-good values to every host's evidence.
func (f *fleet) reevaluate(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	changes, err := f.svc.SetKnownGood(ctx, f.kg)
	if err != nil {
		return 0, err
	}
	if len(changes) != len(f.names) {
		return 0, fmt.Errorf("re-evaluation changed %d of %d hosts", len(changes), len(f.names))
	}
	return time.Since(start), nil
}

// latencies runs f sequentially for d (at least 100 times) and returns the
// 50th and 99th percentile.
func latencies(d time.Duration, f func()) (p50, p99 time.Duration) {
	var ts []time.Duration
	for deadline := time.Now().Add(d); time.Now().Before(deadline) || len(ts) < 100; {
		start := time.Now()
		f()
		ts = append(ts, time.Since(start))
	}
	slices.Sort(ts)
	return ts[len(ts)/2].Round(time.Microsecond), ts[len(ts)*99/100].Round(time.Microsecond)
}
