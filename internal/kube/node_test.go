package kube

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"trustpool/internal/verdict"
)

var t0 = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)

func verdictAt(level verdict.Level, vtime time.Time, validity time.Duration) verdict.Verdict {
	return verdict.Verdict{Host: "node1", Level: level, VTime: vtime, Expiry: vtime.Add(validity), Policy: "fleet v3"}
}

func hasTaint(n *corev1.Node, e corev1.TaintEffect) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == TaintKey && t.Effect == e {
			return true
		}
	}
	return false
}

// TestPlanNode: only a node mapped to a host of its own with a current
// trusted verdict is trusted; every other case is tainted and unlabelled.
func TestPlanNode(t *testing.T) {
	trusted := verdictAt(verdict.Trusted, t0.Add(-time.Minute), time.Hour)
	for _, tc := range []struct {
		name    string
		s       standing
		trusted bool
		status  corev1.ConditionStatus
		reason  string
	}{
		{"trusted", standing{host: "node1", mapped: true, found: true, verdict: trusted}, true, corev1.ConditionTrue, "Trusted"},
		{"untrusted", standing{host: "node1", mapped: true, found: true, verdict: verdictAt(verdict.Untrusted, t0, time.Hour)}, false, corev1.ConditionFalse, "Untrusted"},
		{"never attested", standing{host: "node1", mapped: true}, false, corev1.ConditionUnknown, "NotAttested"},
		{"expired, not yet recorded", standing{host: "node1", mapped: true, found: true, verdict: verdictAt(verdict.Trusted, t0.Add(-2*time.Hour), time.Hour)}, false, corev1.ConditionUnknown, "Expired"},
		{"expiry recorded", standing{host: "node1", mapped: true, found: true, verdict: verdict.Verdict{Host: "node1", Level: verdict.Unknown, VTime: t0, Expiry: t0,
			Reasons: []verdict.Reason{{Code: verdict.CodeExpired, Message: "expired"}}}}, false, corev1.ConditionUnknown, "Expired"},
		{"unreachable", standing{host: "node1", mapped: true, found: true, verdict: verdict.Verdict{Host: "node1", Level: verdict.Unknown, VTime: t0, Expiry: t0.Add(time.Hour),
			Reasons: []verdict.Reason{{Code: verdict.CodeUnreachable, Message: "dial tcp: refused"}}}}, false, corev1.ConditionUnknown, "Unknown"},
		{"no host", standing{source: "label x"}, false, corev1.ConditionUnknown, "NoHost"},
		{"shared host", standing{host: "node1", mapped: true, shared: true, found: true, verdict: trusted}, false, corev1.ConditionFalse, "SharedHost"},
		{"zero verdict", standing{host: "node1", mapped: true, found: true}, false, corev1.ConditionUnknown, "Unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", Labels: map[string]string{"a": "b"}}}
			p := planNode(node, tc.s, Rules{}, t0)
			if got := p.node.Labels[TrustedLabel] == "true"; got != tc.trusted {
				t.Errorf("label: %v, want %v", got, tc.trusted)
			}
			if got := hasTaint(p.node, corev1.TaintEffectNoSchedule); got == tc.trusted {
				t.Errorf("NoSchedule taint: %v, want %v", got, !tc.trusted)
			}
			if hasTaint(p.node, corev1.TaintEffectNoExecute) {
				t.Error("NoExecute without eviction")
			}
			if p.condition.Status != tc.status || p.condition.Reason != tc.reason || !p.condChanged {
				t.Errorf("condition %s %s (changed %v), want %s %s", p.condition.Status, p.condition.Reason, p.condChanged, tc.status, tc.reason)
			}
			_, since := p.node.Annotations[AnnotationUntrustedSince]
			if since == tc.trusted {
				t.Errorf("untrusted-since present %v, want %v", since, !tc.trusted)
			}
			if p.node.Labels["a"] != "b" || node.Labels[TrustedLabel] != "" || len(node.Annotations) != 0 {
				t.Errorf("labels %v; the input node changed: %v %v", p.node.Labels, node.Labels, node.Annotations)
			}
		})
	}
}

// TestPlanNodeTaints: taints that are not ours keep their place and
// values; ours are added once, removed when trusted, and NoExecute comes
// only after the grace period.
func TestPlanNodeTaints(t *testing.T) {
	others := []corev1.Taint{
		{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoSchedule},
		{Key: TaintKey, Value: "by-hand", Effect: corev1.TaintEffectPreferNoSchedule}, // our key, an effect we do not manage
		{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoExecute},
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}, Spec: corev1.NodeSpec{Taints: append(others[:1:1],
		corev1.Taint{Key: TaintKey, Effect: corev1.TaintEffectNoSchedule}, corev1.Taint{Key: TaintKey, Effect: corev1.TaintEffectNoSchedule}, others[1], others[2])}}
	untrusted := standing{host: "node1", mapped: true, found: true, verdict: verdictAt(verdict.Untrusted, t0, time.Hour)}

	p := planNode(node, untrusted, Rules{}, t0)
	want := append(others[:1:1], corev1.Taint{Key: TaintKey, Effect: corev1.TaintEffectNoSchedule}, others[1], others[2])
	if !taintsEqual(p.node.Spec.Taints, want) {
		t.Errorf("untrusted: taints %v, want %v (the duplicate dropped, the rest in place)", p.node.Spec.Taints, want)
	}

	trusted := standing{host: "node1", mapped: true, found: true, verdict: verdictAt(verdict.Trusted, t0, time.Hour)}
	p = planNode(node, trusted, Rules{Evict: true, EvictAfter: time.Minute}, t0)
	if !taintsEqual(p.node.Spec.Taints, others) {
		t.Errorf("trusted: taints %v, want %v", p.node.Spec.Taints, others)
	}

	// Eviction: the grace period runs from untrusted-since, kept on the node.
	rules := Rules{Evict: true, EvictAfter: 5 * time.Minute}
	p = planNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}, untrusted, rules, t0)
	if hasTaint(p.node, corev1.TaintEffectNoExecute) || p.recheck != 5*time.Minute {
		t.Errorf("at the start of the grace period: NoExecute %v, recheck %v", hasTaint(p.node, corev1.TaintEffectNoExecute), p.recheck)
	}
	// Kept in whole seconds, rounded up: never a shorter grace period.
	if q := planNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}, untrusted, rules, t0.Add(300*time.Millisecond)); q.recheck != 5*time.Minute+700*time.Millisecond {
		t.Errorf("untrusted since t0+300ms: recheck %v, want 5m0.7s", q.recheck)
	}
	later := planNode(p.node, untrusted, rules, t0.Add(4*time.Minute))
	if hasTaint(later.node, corev1.TaintEffectNoExecute) || later.recheck != time.Minute {
		t.Errorf("within the grace period: NoExecute %v, recheck %v", hasTaint(later.node, corev1.TaintEffectNoExecute), later.recheck)
	}
	after := planNode(p.node, untrusted, rules, t0.Add(5*time.Minute))
	if !hasTaint(after.node, corev1.TaintEffectNoSchedule) || !hasTaint(after.node, corev1.TaintEffectNoExecute) || after.recheck != 0 {
		t.Errorf("after the grace period: taints %v, recheck %v", after.node.Spec.Taints, after.recheck)
	}
	for _, tt := range after.node.Spec.Taints {
		if tt.Effect == corev1.TaintEffectNoExecute && (tt.TimeAdded == nil || !tt.TimeAdded.Time.Equal(t0.Add(5*time.Minute))) {
			t.Errorf("NoExecute taint added at %v, want %v", tt.TimeAdded, t0.Add(5*time.Minute))
		}
	}
	// Eviction turned off again: our NoExecute goes, NoSchedule stays.
	off := planNode(after.node, untrusted, Rules{}, t0.Add(6*time.Minute))
	if hasTaint(off.node, corev1.TaintEffectNoExecute) || !hasTaint(off.node, corev1.TaintEffectNoSchedule) {
		t.Errorf("eviction off: taints %v", off.node.Spec.Taints)
	}
	// Trusted again: both go, and the grace period starts afresh next time.
	back := planNode(after.node, trusted, rules, t0.Add(6*time.Minute))
	if len(back.node.Spec.Taints) != 0 || back.node.Annotations[AnnotationUntrustedSince] != "" {
		t.Errorf("trusted again: taints %v, since %q", back.node.Spec.Taints, back.node.Annotations[AnnotationUntrustedSince])
	}
}

func taintsEqual(a, b []corev1.Taint) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].MatchTaint(&b[i]) || a[i].Value != b[i].Value {
			return false
		}
	}
	return true
}

// TestPlanNodeSteady: a node that already carries the plan needs no
// write, and a re-attestation alone (new vtime and expiry) needs one only
// once the annotated expiry has passed.
func TestPlanNodeSteady(t *testing.T) {
	s := standing{host: "node1", mapped: true, found: true, verdict: verdictAt(verdict.Trusted, t0, time.Minute)}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}
	p := planNode(node, s, Rules{}, t0)
	if sameObject(node, p.node) {
		t.Fatal("a fresh node needs no write")
	}
	node = p.node
	node.Status.Conditions = []corev1.NodeCondition{p.condition}
	if again := planNode(node, s, Rules{}, t0.Add(time.Second)); !sameObject(node, again.node) || again.condChanged {
		t.Errorf("steady node: write %v, condition %v", !sameObject(node, again.node), again.condChanged)
	}
	s.verdict = verdictAt(verdict.Trusted, t0.Add(30*time.Second), time.Minute)
	if again := planNode(node, s, Rules{}, t0.Add(30*time.Second)); !sameObject(node, again.node) {
		t.Errorf("re-attested before the annotated expiry: a write of %v", again.node.Annotations)
	}
	s.verdict = verdictAt(verdict.Trusted, t0.Add(61*time.Second), time.Minute)
	again := planNode(node, s, Rules{}, t0.Add(61*time.Second))
	if sameObject(node, again.node) || again.node.Annotations[AnnotationExpiry] != t0.Add(121*time.Second).Format(time.RFC3339) {
		t.Errorf("after the annotated expiry: annotations %v", again.node.Annotations)
	}
	if again.condChanged {
		t.Error("the condition changed with nothing but the times")
	}
	for k, want := range map[string]string{AnnotationHost: "node1", AnnotationLevel: "trusted", AnnotationPolicy: "fleet v3",
		AnnotationVTime: t0.Add(61 * time.Second).Format(time.RFC3339)} {
		if got := again.node.Annotations[k]; got != want {
			t.Errorf("annotation %s = %q, want %q", k, got, want)
		}
	}
}

func TestMapping(t *testing.T) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "ip-10-0-0-17", Labels: map[string]string{"node-restriction.kubernetes.io/trustpool-host": "Compute-17.Example.COM"},
		Annotations: map[string]string{"trustpool.io/host": "other.example"}}}
	for _, tc := range []struct {
		m    Mapping
		want string
		ok   bool
	}{
		{Mapping{}, "ip-10-0-0-17", true},
		{Mapping{Label: "node-restriction.kubernetes.io/trustpool-host"}, "compute-17.example.com", true},
		{Mapping{Annotation: "trustpool.io/host"}, "other.example", true},
		{Mapping{Label: "missing"}, "", false},
	} {
		if got, ok := tc.m.Host(n); got != tc.want || ok != tc.ok {
			t.Errorf("%+v: %q %v, want %q %v", tc.m, got, ok, tc.want, tc.ok)
		}
	}
	err := Mapping{Label: "a", Annotation: "b"}.Validate()
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("label and annotation: %v", err)
	}
	if err := (Mapping{Label: "not a key!"}).Validate(); err == nil {
		t.Error("a bad label key was accepted")
	}
}
