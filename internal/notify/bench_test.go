package notify_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"trustpool/internal/notify"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// BenchmarkChanged is the cost a level change adds to the attesting
// goroutine: encoding the payload and one outbox insert per target (SQLite
// on disk, WAL).
func BenchmarkChanged(b *testing.B) {
	for _, targets := range []int{1, 3} {
		b.Run(fmt.Sprintf("targets=%d", targets), func(b *testing.B) {
			var urls []string
			for i := range targets {
				urls = append(urls, fmt.Sprintf("https://hook%d.example/", i))
			}
			n, err := notify.New(notify.Config{Targets: urls}, newStore(b))
			if err != nil {
				b.Fatal(err)
			}
			clk := newClock()
			v := transition(clk, "node1", verdict.Untrusted)
			b.ReportAllocs()
			for b.Loop() {
				n.Changed(v, verdict.Trusted)
			}
		})
	}
}

// counter is a receiver that counts deliveries and signals each one.
type counter struct {
	n  atomic.Int64
	ch chan struct{}
}

func (c *counter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	c.n.Add(1)
	select {
	case c.ch <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusNoContent)
}

func startBench(b *testing.B, s notify.Store) (*notify.Notifier, *counter) {
	c := &counter{ch: make(chan struct{}, 1)}
	srv := httptest.NewServer(c)
	b.Cleanup(srv.Close)
	n, err := notify.New(notify.Config{Targets: []string{srv.URL}}, s)
	if err != nil {
		b.Fatal(err)
	}
	run(b, n)
	return n, c
}

// BenchmarkChangedToDelivered is the latency from a level change to the
// receiver's 2xx, one at a time, real clock, loopback HTTP.
func BenchmarkChangedToDelivered(b *testing.B) {
	n, c := startBench(b, newStore(b))
	v := transition(newClock(), "node1", verdict.Untrusted)
	for b.Loop() {
		n.Changed(v, verdict.Trusted)
		<-c.ch
	}
}

// BenchmarkDrain is the cost per notification of delivering a backlog (a
// receiver that was down): b.N notifications already in the outbox.
func BenchmarkDrain(b *testing.B) {
	s := newStore(b)
	c := &counter{ch: make(chan struct{}, 1)}
	srv := httptest.NewServer(c)
	b.Cleanup(srv.Close)
	ctx := context.Background()
	now := time.Now()
	for range b.N {
		if _, err := s.Enqueue(ctx, store.Notification{Target: srv.URL, Body: []byte(`{}`), CreatedAt: now}); err != nil {
			b.Fatal(err)
		}
	}
	n, err := notify.New(notify.Config{Targets: []string{srv.URL}, Poll: 10 * time.Millisecond}, s)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	stop := run(b, n)
	deadline := time.After(time.Minute)
	for c.n.Load() < int64(b.N) {
		select {
		case <-c.ch:
		case <-deadline:
			b.Fatalf("%d of %d delivered after a minute", c.n.Load(), b.N)
		}
	}
	b.StopTimer()
	stop()
}
