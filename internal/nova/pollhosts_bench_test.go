package nova

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"trustpool/internal/verdict"
)

// BenchmarkPollHosts measures one whole ServeHTTP (decode, look up, encode)
// for a Nova request naming every host of a fleet of FQDN-named nodes (80 %
// trusted, 10 % untrusted, 10 % never attested). Besides ns/op it reports the
// p50 and p99 of the individual calls.
func BenchmarkPollHosts(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			c := make(cache, n)
			names := make([]string, n)
			for i := range names {
				h := fmt.Sprintf("compute-%05d.rack%02d.dc1.example.com", i, i%40)
				names[i] = h
				l := verdict.Trusted
				switch i % 10 {
				case 0:
					l = verdict.Untrusted
				case 1:
					continue
				}
				vt := testNow.Add(-time.Duration(i%60) * time.Second)
				c[h] = verdict.Verdict{Host: h, Level: l, VTime: vt, Expiry: vt.Add(5 * time.Minute)}
			}
			body, err := json.Marshal(map[string]any{"count": n, "hosts": names})
			if err != nil {
				b.Fatal(err)
			}
			h := NewPollHosts(PollHostsConfig{Now: func() time.Time { return testNow }}, c)
			durations := make([]time.Duration, 0, 1024)
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, PrefixNova+"/PollHosts", bytes.NewReader(body))
				rec := httptest.NewRecorder()
				start := time.Now()
				h.ServeHTTP(rec, req)
				durations = append(durations, time.Since(start))
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
			slices.Sort(durations)
			pct := func(p float64) float64 {
				return float64(durations[int(p*float64(len(durations)-1))].Microseconds())
			}
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
		})
	}
}
