package kube_test

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"trustpool/internal/fleetsim/fleet"
	"trustpool/internal/verdict"
)

// BenchmarkTransitionToTaint measures, against a real kube-apiserver,
// how long a verdict transition takes to be visible on the Node: from the
// recorder's commit of the level change (its OnChange) to a watch of the
// Node seeing the taint on (a tampered reboot) or off (a good reboot
// after it). Each iteration is one tampered and one good reboot of a
// simulated node, attested on its hello by `trustpool server`. Reported
// (mean, p50, p99, max): transition → taint on, transition → taint off,
// and hello → taint on (the whole path from the node's boot).
func BenchmarkTransitionToTaint(b *testing.B) {
	const host = firstHost
	admin, tp := startTrustedNode(b, nil)

	transitions := make(chan time.Time, 16)
	tp.srv.Integrity().Recorder().OnChange(func(v verdict.Verdict, _ verdict.Level) {
		if v.Host == host {
			transitions <- time.Now()
		}
	})
	// seen carries the time the watch saw the Node change trust, and how.
	type seen struct {
		at      time.Time
		trusted bool
	}
	seenc := make(chan seen, 16)
	w, err := admin.CoreV1().Nodes().Watch(context.Background(), metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", host).String()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Stop)
	go func() {
		last := true
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			if now := trusted(n); now != last && (now || untrusted(n)) {
				last = now
				seenc <- seen{time.Now(), now}
			}
		}
	}()

	step := func(hypervisor string, wantTrusted bool) (transition, hello time.Duration) {
		b.Helper()
		start := time.Now()
		tp.reboot(b, host, hypervisor)
		var at time.Time
		select {
		case at = <-transitions:
		case <-time.After(wait):
			b.Fatalf("no transition after the reboot into %s", hypervisor)
		}
		select {
		case s := <-seenc:
			if s.trusted != wantTrusted {
				b.Fatalf("the Node turned trusted=%v, want %v", s.trusted, wantTrusted)
			}
			return s.at.Sub(at), s.at.Sub(start)
		case <-time.After(wait):
			b.Fatalf("the Node did not turn trusted=%v", wantTrusted)
		}
		return 0, 0
	}
	var taint, untaint, hello []time.Duration
	for b.Loop() {
		d, h := step(fleet.Tampered, false)
		taint, hello = append(taint, d), append(hello, h)
		d, _ = step(fleet.Hypervisor, true)
		untaint = append(untaint, d)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	report := func(name string, s []time.Duration) {
		slices.Sort(s)
		var sum time.Duration
		for _, d := range s {
			sum += d
		}
		q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
		b.ReportMetric(ms(sum/time.Duration(len(s))), name+"-mean-ms")
		b.ReportMetric(ms(q(0.5)), name+"-p50-ms")
		b.ReportMetric(ms(q(0.99)), name+"-p99-ms")
		b.ReportMetric(ms(s[len(s)-1]), name+"-max-ms")
	}
	report("taint", taint)
	report("untaint", untaint)
	report("hello-to-taint", hello)
}
