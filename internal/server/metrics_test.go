package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"trustpool/internal/agent/bootsim"
	"trustpool/internal/notify"
	"trustpool/internal/nova"
	"trustpool/internal/server"
	"trustpool/internal/verdict"
)

// scrape GETs /metrics with token (none when empty) and returns the status
// and, for a 200, the families parsed from the text format.
func (e *env) scrape(token string) (int, map[string]*dto.MetricFamily) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL()+"/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		e.t.Errorf("GET /metrics: Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		e.t.Fatalf("parse /metrics: %v", err)
	}
	return resp.StatusCode, fams
}

// sample finds the series of family name with exactly the labels given
// (others may exist), or nil.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	return nil
}

// value is a counter's or gauge's value, or a histogram's count.
func value(m *dto.Metric) float64 {
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

// TestMetrics: a server with an agent on swtpm and a webhook receiver
// serves every trustpool family at /metrics to a reader token, with values
// that follow what happened (an enrollment, attestations, a trusted host, a
// delivered webhook), and refuses a scrape without a token.
func TestMetrics(t *testing.T) {
	needSWTPM(t)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	t.Cleanup(receiver.Close)
	e := startServerWith(t, func(c *server.Config) {
		c.Webhooks = &notify.Config{Targets: []string{receiver.URL}}
	})
	startNode(t, e, "node1", bootsim.Profile{Launch: true})
	e.golden("node1")
	if v := e.attest("node1"); v.Level != verdict.Trusted {
		t.Fatalf("attest: %+v, want trusted", v)
	}
	code, body := e.call("POST", "/v1/tokens", map[string]string{"name": "scraper", "role": "reader"})
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("create reader token: %d %s", code, body)
	}
	var tok struct{ Token string }
	if err := json.Unmarshal(body, &tok); err != nil || tok.Token == "" {
		t.Fatalf("create reader token: %s", body)
	}

	if code, _ := e.scrape(""); code != http.StatusUnauthorized {
		t.Errorf("GET /metrics without a token: %d, want 401", code)
	}
	var fams map[string]*dto.MetricFamily
	waitFor(t, "a delivered webhook in /metrics", func() bool {
		var code int
		code, fams = e.scrape(tok.Token)
		if code != http.StatusOK {
			t.Fatalf("GET /metrics with a reader token: %d", code)
		}
		return value(sample(fams, "trustpool_webhook_deliveries_total", "result", "delivered")) >= 1
	})

	checks := []struct {
		name   string
		labels []string
		ok     func(float64) bool
		want   string
	}{
		{"trustpool_attestations_total", []string{"level", "trusted", "reason", "none"}, func(v float64) bool { return v >= 1 }, "≥ 1"},
		{"trustpool_attestations_total", []string{"level", "untrusted", "reason", verdict.CodeNoPolicy}, func(v float64) bool { return v >= 1 }, "≥ 1"},
		{"trustpool_hosts", []string{"level", "trusted"}, func(v float64) bool { return v == 1 }, "1"},
		{"trustpool_hosts", []string{"level", "untrusted"}, func(v float64) bool { return v == 0 }, "0"},
		{"trustpool_hosts", []string{"level", "unknown"}, func(v float64) bool { return v == 0 }, "0"},
		{"trustpool_hosts_overdue", nil, func(v float64) bool { return v == 0 }, "0"},
		{"trustpool_verdict_cache_size", nil, func(v float64) bool { return v == 1 }, "1"},
		{"trustpool_enrollments_total", []string{"outcome", "admitted"}, func(v float64) bool { return v == 1 }, "1"},
		{"trustpool_challenge_duration_seconds", []string{"result", "ok"}, func(v float64) bool { return v >= 2 }, "≥ 2 observations"},
		{"trustpool_appraisal_duration_seconds", nil, func(v float64) bool { return v >= 2 }, "≥ 2 observations"},
		{"trustpool_store_operation_duration_seconds", []string{"op", "record_verdicts", "result", "ok"}, func(v float64) bool { return v >= 3 }, "≥ 3 observations"},
		{"trustpool_placement_sync_failures_total", []string{"pass", "reconcile"}, func(v float64) bool { return v == 0 }, "0"},
		{"trustpool_webhook_deliveries_total", []string{"result", "failed"}, func(v float64) bool { return v == 0 }, "0"},
		{"trustpool_webhook_inflight", nil, func(v float64) bool { return v >= 0 }, "present"},
	}
	for _, c := range checks {
		if got := value(sample(fams, c.name, c.labels...)); !c.ok(got) {
			t.Errorf("%s%v = %v, want %s", c.name, c.labels, got, c.want)
		}
	}
	if t.Failed() {
		_, raw := e.call("GET", "/metrics", nil)
		t.Logf("/metrics:\n%s", raw)
	}
}

// TestMetricsCountExpiry: a verdict that expires is counted as its own
// outcome, and the host reads unknown in trustpool_hosts.
func TestMetricsCountExpiry(t *testing.T) {
	needSWTPM(t)
	e := startServerWith(t, func(c *server.Config) { c.Integrity.Validity = time.Second })
	startNode(t, e, "node1", bootsim.Profile{Launch: true})
	var fams map[string]*dto.MetricFamily
	waitFor(t, "the expiry in /metrics", func() bool {
		_, fams = e.scrape(e.token) // the admin token may scrape too
		return value(sample(fams, "trustpool_attestations_total", "level", "expired", "reason", verdict.CodeExpired)) == 1
	})
	if got := value(sample(fams, "trustpool_hosts", "level", "unknown")); got != 1 {
		t.Errorf("trustpool_hosts{level=unknown} = %v after the expiry, want 1", got)
	}
}

// TestMetricsOutboxDepth: the outbox gauges count what waits in the
// database: webhook notifications while their receiver fails, trait
// changes while Placement cannot be reached; the webhook outbox empties
// once the receiver answers again.
func TestMetricsOutboxDepth(t *testing.T) {
	needSWTPM(t)
	var failing atomic.Bool
	failing.Store(true)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if failing.Load() {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(receiver.Close)
	e := startServerWith(t, func(c *server.Config) {
		c.Webhooks = &notify.Config{Targets: []string{receiver.URL}, MaxBackoff: time.Second}
		c.Placement = &nova.TraitSyncConfig{Endpoint: refusedURL(t), Token: "admin"}
	})
	startNode(t, e, "node1", bootsim.Profile{Launch: true})
	e.golden("node1")
	if v := e.attest("node1"); v.Level != verdict.Trusted {
		t.Fatalf("attest: %+v, want trusted", v)
	}
	gauge := func(name string) float64 {
		_, fams := e.scrape(e.token)
		return value(sample(fams, name))
	}
	// node1 went unknown → untrusted (no policy yet) → trusted: two
	// notifications wait, one trait change (a host's row follows its
	// latest change).
	waitFor(t, "the outboxes in /metrics", func() bool {
		return gauge("trustpool_webhook_outbox") == 2 && gauge("trustpool_trait_outbox") == 1
	})
	failing.Store(false)
	waitFor(t, "the webhook outbox empty", func() bool { return gauge("trustpool_webhook_outbox") == 0 })
	if got := gauge("trustpool_trait_outbox"); got != 1 {
		t.Errorf("trustpool_trait_outbox = %v with Placement unreachable, want 1", got)
	}
}

// refusedURL is a loopback URL whose connections are refused for the whole
// test: a socket bound to its port but not listening holds the port, so
// that no listener the test starts can take it (a closed listener's port
// can be, and then something else answers).
func refusedURL(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
