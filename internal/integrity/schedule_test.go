package integrity

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestScheduleSpreadsAndKeepsPlace(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	const interval = time.Minute
	q := newSchedule(interval, clk.Now)
	var hosts []string
	for i := range 1000 {
		hosts = append(hosts, "node"+string(rune('a'+i%26))+time.Duration(i).String())
	}
	q.keep(hosts)
	// Due times fall over the coming interval, not at one instant.
	seen := map[time.Time]bool{}
	var first time.Time
	clk.Add(interval)
	n := 0
	for {
		h, due, _ := q.take()
		if h == "" {
			break
		}
		if due.Before(clk.Now().Add(-interval)) || due.After(clk.Now()) {
			t.Fatalf("%s due at %v, outside the first interval", h, due)
		}
		seen[due] = true
		if n == 0 {
			first = due
		}
		n++
		q.done(h, due, true)
	}
	if n != len(hosts) || len(seen) < 900 {
		t.Fatalf("took %d hosts at %d distinct times, want %d spread out", n, len(seen), len(hosts))
	}
	// Each host keeps its place: the first is due again an interval on.
	if h, _, wait := q.take(); h != "" || wait != first.Add(interval).Sub(clk.Now()) {
		t.Fatalf("next due in %v, want %v", wait, first.Add(interval).Sub(clk.Now()))
	}
	q.keep(hosts[:10])
	clk.Add(2 * interval)
	taken := 0
	for {
		h, due, _ := q.take()
		if h == "" {
			break
		}
		taken++
		q.done(h, due, true)
	}
	if taken != 10 {
		t.Fatalf("after keeping 10 hosts %d were due", taken)
	}
}

func TestScheduleBackoffAndHello(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	const interval = time.Minute
	q := newSchedule(interval, clk.Now)
	q.soon("node1")
	for i, want := range []time.Duration{interval / 2, interval, 2 * interval, 4 * interval, 4 * interval} {
		h, due, _ := q.take()
		if h != "node1" {
			t.Fatalf("round %d: nothing due", i)
		}
		q.done(h, due, false)
		_, _, wait := q.take()
		if wait != want {
			t.Fatalf("after %d failures next try in %v, want %v", i+1, wait, want)
		}
		clk.Add(wait)
	}
	// A hello ends the backoff; one during an attestation makes the host
	// due again as soon as that attestation ends, never twice at once.
	q.soon("node1")
	h, due, _ := q.take()
	q.soon("node1")
	if h2, _, _ := q.take(); h2 != "" {
		t.Fatalf("%s taken twice at once", h2)
	}
	q.done(h, due, true)
	if h2, _, _ := q.take(); h2 != "node1" {
		t.Fatal("the hello during the attestation was lost")
	}
}

// However many hellos and workers, a host has one challenge in flight.
func TestOneChallengeInFlightPerHost(t *testing.T) {
	f := newFixture(t, "node1")
	f.golden(t, "node1")
	f.svc.cfg.Concurrency = 8
	var mu sync.Mutex
	inflight, most, calls := 0, 0, 0
	release := make(chan struct{})
	f.agents.answering = func() {
		mu.Lock()
		inflight++
		calls++
		most = max(most, inflight)
		first := calls == 1
		mu.Unlock()
		if first {
			<-release
		}
		mu.Lock()
		inflight--
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	f.svc.Hello("node1")
	waitUntil(t, "the first challenge", func() bool { mu.Lock(); defer mu.Unlock(); return calls == 1 })
	for range 20 {
		f.svc.Hello("node1")
	}
	close(release)
	waitUntil(t, "the hello during the challenge answered", func() bool { mu.Lock(); defer mu.Unlock(); return calls == 2 && inflight == 0 })
	mu.Lock()
	defer mu.Unlock()
	if most != 1 {
		t.Fatalf("%d challenges of node1 were in flight at once, want 1", most)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited 10 s for %s", what)
		}
	}
}

// A host new to the schedule with a verdict (a restart, a takeover from a
// dead replica) keeps its place: due an interval after that verdict, or at
// once when that is past, never a whole random interval later.
func TestScheduleNewHostsKeepTheirPlace(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
	const interval = time.Minute
	q := newSchedule(interval, clk.Now)
	verdicts := map[string]time.Time{"recent": clk.Now().Add(-20 * time.Second), "stale": clk.Now().Add(-5 * time.Minute)}
	q.last = func(h string) (time.Time, bool) { at, ok := verdicts[h]; return at, ok }
	q.keep([]string{"recent", "stale"})
	clk.Add(interval / 10)
	if h, _, _ := q.take(); h != "stale" {
		t.Fatalf("first due %q, want the stale host within a tenth of an interval", h)
	}
	if h, _, wait := q.take(); h != "" || wait != 40*time.Second-interval/10 {
		t.Fatalf("the recent host is due in %v (%q), want an interval after its verdict", wait, h)
	}
}
