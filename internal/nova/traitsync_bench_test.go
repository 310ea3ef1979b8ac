package nova

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"trustpool/internal/nova/placementtest"
	"trustpool/internal/verdict"
)

// putSignal is a RoundTripper that reports every successful trait write.
type putSignal struct {
	next http.RoundTripper
	done chan struct{}
}

func (p *putSignal) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := p.next.RoundTrip(req)
	if err == nil && req.Method == http.MethodPut && res.StatusCode == http.StatusOK {
		select {
		case p.done <- struct{}{}:
		default:
		}
	}
	return res, err
}

// BenchmarkTraitSyncChanged measures, against the real Placement service,
// the time from a level change to the trait write that Placement has
// acknowledged: the "out of the pool" latency after a verdict changes. It
// includes recording the verdict with its trait change (SQLite), the
// Coalesce wait, claiming the change, finding the provider by name, reading
// its traits and writing them. p50/p99 are of the single changes.
func BenchmarkTraitSyncChanged(b *testing.B) {
	p := placementtest.Start(b)
	p.CreateProvider(b, "bench1")
	for _, coalesce := range []time.Duration{DefaultCoalesce, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("coalesce=%v", coalesce), func(b *testing.B) {
			levels := newHostStore(b, map[string]verdict.Level{"bench1": verdict.Trusted})
			sig := &putSignal{next: p.Client.Transport, done: make(chan struct{}, 1)}
			s := newSync(b, TraitSyncConfig{Endpoint: p.URL, Token: p.Token, Interval: time.Hour, Coalesce: coalesce,
				HTTPClient: &http.Client{Transport: sig}}, levels)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { _ = s.Run(ctx) })
			defer func() { cancel(); wg.Wait() }()
			// Let the start reconcile settle: it writes bench1's trait once
			// unless it is already there.
			if err := s.Reconcile(ctx); err != nil {
				b.Fatal(err)
			}
			drain(sig.done)

			level := verdict.Trusted
			var lat []time.Duration
			for b.Loop() {
				if level == verdict.Trusted {
					level = verdict.Untrusted
				} else {
					level = verdict.Trusted
				}
				start := time.Now()
				levels.set("bench1", level)
				s.Wake()
				select {
				case <-sig.done:
				case <-time.After(30 * time.Second):
					b.Fatal("no trait write within 30 s")
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
			b.ReportMetric(float64(lat[(len(lat)-1)*99/100].Milliseconds()), "p99-ms")
		})
	}
}

func drain(c chan struct{}) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

// BenchmarkTraitSyncReconcile measures one full reconcile of 200 providers
// against the real Placement service when nothing has drifted (the periodic
// pass's steady-state cost: two listings).
func BenchmarkTraitSyncReconcile(b *testing.B) {
	p := placementtest.Start(b)
	levels := newHostStore(b, nil)
	for i := range 200 {
		name := fmt.Sprintf("r%03d", i)
		p.CreateProvider(b, name)
		if i%2 == 0 {
			levels.set(name, verdict.Trusted)
		}
	}
	s := newSync(b, TraitSyncConfig{Endpoint: p.URL, Token: p.Token, HTTPClient: p.Client}, levels)
	ctx := context.Background()
	if err := s.Reconcile(ctx); err != nil { // the first pass marks 100 providers
		b.Fatal(err)
	}
	for b.Loop() {
		if err := s.Reconcile(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
