package kube

import (
	"sync"
	"time"

	"trustpool/internal/verdict"
)

// FakeVerdicts is a Verdicts the tests change as the recorder would; the
// tests of package kube_test use it too.
type FakeVerdicts struct {
	mu sync.Mutex // guards m
	m  map[string]verdict.Verdict
}

func (v *FakeVerdicts) Verdict(host string) (verdict.Verdict, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	got, ok := v.m[host]
	return got, ok
}

// Set makes host's verdict level, established at vtime for validity,
// under the policy "fleet v1".
func (v *FakeVerdicts) Set(host string, l verdict.Level, vtime time.Time, validity time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[string]verdict.Verdict{}
	}
	v.m[host] = verdict.Verdict{Host: host, Level: l, VTime: vtime, Expiry: vtime.Add(validity), Policy: "fleet v1"}
}
