// Package metrics owns the server's Prometheus registry and the definitions
// of every trustpool_* family (docs/metrics.md lists them). Components do
// not see prometheus types: the server hands them the small methods here
// (or funcs built from them), and gauges read their values at scrape time
// through funcs given to Watch.
//
// Label values come from fixed sets (trust levels, reason codes, outcome
// names), never from hosts or clients, so the number of series is bounded.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"trustpool/internal/verdict"
)

const ns = "trustpool"

// Levels are the trust levels, in the order the hosts gauge reports them.
var Levels = []verdict.Level{verdict.Trusted, verdict.Untrusted, verdict.Unknown}

// Metrics is the registry and the families the components update. It is
// safe for concurrent use.
type Metrics struct {
	reg           *prometheus.Registry
	attestations  *prometheus.CounterVec
	challenge     *prometheus.HistogramVec
	appraisal     prometheus.Histogram
	enrollments   *prometheus.CounterVec
	storeOps      *prometheus.HistogramVec
	placement     *prometheus.CounterVec
	webhooks      *prometheus.CounterVec
	kubeErrors    *prometheus.CounterVec
	kubeTaints    *prometheus.CounterVec
	kubeLeader    prometheus.Gauge
	gaugesWatched bool
}

// New builds a registry (not the global default one) with the Go runtime
// and process collectors and every trustpool family except the gauges,
// which Watch adds.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.attestations = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "attestations_total",
		Help: "Verdicts the recorder wrote, by level (\"expired\" for an expiry) and first reason code (\"none\" without reasons)."},
		[]string{"level", "reason"})
	m.challenge = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "challenge_duration_seconds",
		Help:    "Round trips of pull-mode challenges to agents, by result (ok, agent_error, unreachable).",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"result"})
	m.appraisal = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "appraisal_duration_seconds",
		Help:    "Verification and appraisal of one piece of evidence (quote, event log replay, policy).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}})
	m.enrollments = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "enrollments_total",
		Help: "Enrollment steps by outcome (admitted, pending, approved, refused) and, for refusals, kind."},
		[]string{"outcome", "kind"})
	m.storeOps = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "store_operation_duration_seconds",
		Help:    "Store operations by name (record_verdicts, remove_host) and result (ok, error).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"op", "result"})
	m.placement = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "placement_sync_failures_total",
		Help: "Failed Placement trait sync passes, by pass (reconcile, changes)."}, []string{"pass"})
	m.webhooks = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "webhook_deliveries_total",
		Help: "Webhook delivery attempts by result (delivered, failed)."}, []string{"result"})
	m.kubeErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "kube_api_errors_total",
		Help: "Failed Kubernetes API calls of the node controller, by operation (patch_node, patch_node_status, get_node)."}, []string{"op"})
	m.kubeTaints = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "kube_taint_changes_total",
		Help: "trustpool.io/untrusted taints the node controller added or removed, by effect (NoSchedule, NoExecute) and change (added, removed)."},
		[]string{"effect", "change"})
	m.kubeLeader = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "kube_leader",
		Help: "1 while this replica holds the node controller's Lease and writes Nodes, 0 otherwise."})
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.attestations, m.challenge, m.appraisal, m.enrollments, m.storeOps, m.placement, m.webhooks)
	// Series that exist from the start, so that rate() and alerts see zeros.
	for _, r := range []string{"delivered", "failed"} {
		m.webhooks.WithLabelValues(r)
	}
	for _, p := range []string{"reconcile", "changes"} {
		m.placement.WithLabelValues(p)
	}
	return m
}

// Handler serves the registry in the Prometheus text format (or what the
// scraper negotiates).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Recorded counts one verdict the recorder wrote; expired marks the
// expiry of an earlier verdict.
func (m *Metrics) Recorded(v verdict.Verdict, expired bool) {
	level, reason := string(v.Level), "none"
	if expired {
		level = "expired"
	}
	if len(v.Reasons) > 0 {
		reason = v.Reasons[0].Code
	}
	m.attestations.WithLabelValues(level, reason).Inc()
}

// StoreOp records the duration of one store operation.
func (m *Metrics) StoreOp(op string, d time.Duration, err error) {
	m.storeOps.WithLabelValues(op, result(err)).Observe(d.Seconds())
}

// Challenge records one challenge round trip; result is ok, agent_error
// or unreachable.
func (m *Metrics) Challenge(d time.Duration, result string) {
	m.challenge.WithLabelValues(result).Observe(d.Seconds())
}

// Appraisal records one verification and appraisal.
func (m *Metrics) Appraisal(d time.Duration) { m.appraisal.Observe(d.Seconds()) }

// Enrollment counts one enrollment outcome; kind names a refusal's
// problem kind and is empty otherwise.
func (m *Metrics) Enrollment(outcome, kind string) {
	m.enrollments.WithLabelValues(outcome, kind).Inc()
}

// PlacementFailure counts one failed Placement sync pass.
func (m *Metrics) PlacementFailure(pass string) { m.placement.WithLabelValues(pass).Inc() }

// Kube registers the Kubernetes node controller's families; the server
// calls it only when the controller runs, so that a server without
// Kubernetes shows none of them.
func (m *Metrics) Kube() {
	m.reg.MustRegister(m.kubeErrors, m.kubeTaints, m.kubeLeader)
	for _, op := range []string{"patch_node", "patch_node_status", "get_node"} {
		m.kubeErrors.WithLabelValues(op)
	}
	for _, e := range []string{"NoSchedule", "NoExecute"} {
		for _, c := range []string{"added", "removed"} {
			m.kubeTaints.WithLabelValues(e, c)
		}
	}
}

// KubeAPIError counts one failed Kubernetes API call.
func (m *Metrics) KubeAPIError(op string) { m.kubeErrors.WithLabelValues(op).Inc() }

// KubeTaintChange counts one taint of ours added or removed.
func (m *Metrics) KubeTaintChange(effect string, added bool) {
	c := "removed"
	if added {
		c = "added"
	}
	m.kubeTaints.WithLabelValues(effect, c).Inc()
}

// KubeLeading records whether this replica writes Nodes.
func (m *Metrics) KubeLeading(on bool) {
	if on {
		m.kubeLeader.Set(1)
	} else {
		m.kubeLeader.Set(0)
	}
}

// WebhookDelivery counts one webhook delivery attempt.
func (m *Metrics) WebhookDelivery(delivered bool) {
	r := "failed"
	if delivered {
		r = "delivered"
	}
	m.webhooks.WithLabelValues(r).Inc()
}

// Gauges are the values read at scrape time. A nil func leaves its family
// out.
type Gauges struct {
	// Hosts is every cached verdict's level now (fail closed: expired
	// reads unknown).
	Hosts func() map[verdict.Level]int
	// CacheSize is the number of verdicts in the cache.
	CacheSize func() int
	// Overdue is the number of hosts whose attestation is overdue.
	Overdue func() int
	// WebhookInFlight is the number of notifications claimed from the
	// outbox and not finished.
	WebhookInFlight func() int
	// WebhookOutbox and TraitOutbox are the rows waiting in the webhook
	// and the Placement trait outboxes (claimed, due or backing off): what
	// the database holds that a consumer has not yet applied. Read from the
	// store at scrape time; a failed read reports -1.
	WebhookOutbox, TraitOutbox func() int
}

// Watch registers the scrape-time gauges; call it once.
func (m *Metrics) Watch(g Gauges) {
	if m.gaugesWatched {
		panic("metrics: Watch called twice")
	}
	m.gaugesWatched = true
	gauge := func(name, help string, f func() int) {
		if f != nil {
			m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help},
				func() float64 { return float64(f()) }))
		}
	}
	gauge("verdict_cache_size", "Verdicts in the verdict cache.", g.CacheSize)
	gauge("hosts_overdue", "Hosts whose attestation is due for longer than a challenge's timeout without a worker to take it.", g.Overdue)
	gauge("webhook_inflight", "Webhook notifications claimed from the outbox and not yet delivered or failed.", g.WebhookInFlight)
	gauge("webhook_outbox", "Webhook notifications in the outbox, not yet delivered (-1: the store did not answer).", g.WebhookOutbox)
	gauge("trait_outbox", "Placement trait changes in the outbox, not yet applied (-1: the store did not answer).", g.TraitOutbox)
	if g.Hosts != nil {
		m.reg.MustRegister(&hostsCollector{count: g.Hosts, desc: prometheus.NewDesc(ns+"_hosts",
			"Hosts in the verdict cache by their level now (an expired verdict reads unknown).", []string{"level"}, nil)})
	}
}

// hostsCollector reports hosts by level, every level always present.
type hostsCollector struct {
	count func() map[verdict.Level]int
	desc  *prometheus.Desc
}

func (c *hostsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *hostsCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.count()
	for _, l := range Levels {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n[l]), string(l))
	}
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
