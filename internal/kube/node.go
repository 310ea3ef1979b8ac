package kube

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"trustpool/internal/verdict"
)

// What the controller writes on Nodes. Operators select trusted nodes with
// TrustedLabel (kubelets cannot set the node-restriction.kubernetes.io/
// prefix) and register kubelets with TaintKey:NoSchedule, so that a new
// node starts out of the pool.
const (
	TaintKey      = "trustpool.io/untrusted"
	TrustedLabel  = "node-restriction.kubernetes.io/trustpool-trusted"
	ConditionType = corev1.NodeConditionType("TrustpoolTrusted")

	AnnotationHost           = "trustpool.io/host"
	AnnotationLevel          = "trustpool.io/level"
	AnnotationPolicy         = "trustpool.io/policy"
	AnnotationVTime          = "trustpool.io/vtime"
	AnnotationExpiry         = "trustpool.io/expiry"
	AnnotationUntrustedSince = "trustpool.io/untrusted-since"
)

// maxMessage bounds the condition's message (the verdict's reasons).
const maxMessage = 1024

// Verdicts is the read side of the verdict cache (recorder.Cache): the
// latest verdict as stored, ok false for a host never attested. Callers
// read its level with verdict.Verdict.At, fail closed. It must not block on
// a node and must be safe for concurrent use.
type Verdicts interface {
	Verdict(host string) (v verdict.Verdict, ok bool)
}

// Mapping says which trustpool host a Node is: by default its name; or the
// value of the label or the annotation named here (at most one of them).
//
// What is trusted: a node's name is bound to its kubelet's credential by
// the NodeRestriction admission plugin, but a kubelet may write its own
// Node's annotations and any label outside the kubernetes.io and k8s.io
// namespaces. Map by a label under node-restriction.kubernetes.io/ (set by
// an administrator) or by name, or a node can claim another's host; a host
// named by two Nodes makes both untrusted.
type Mapping struct {
	Label      string
	Annotation string
}

// Validate reports every problem at once.
func (m Mapping) Validate() error {
	var errs []error
	if m.Label != "" && m.Annotation != "" {
		errs = append(errs, errors.New("kubernetes: map nodes to hosts by a label or by an annotation, not both"))
	}
	for _, k := range []struct{ what, key string }{{"label", m.Label}, {"annotation", m.Annotation}} {
		if k.key == "" {
			continue
		}
		if msgs := validation.IsQualifiedName(k.key); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("kubernetes: host %s %q: %s", k.what, k.key, strings.Join(msgs, "; ")))
		}
	}
	return errors.Join(errs...)
}

// Host returns the trustpool host n names, in lower case (trustpool's
// canonical form), or false when it names none.
func (m Mapping) Host(n *corev1.Node) (string, bool) {
	var h string
	switch {
	case m.Label != "":
		h = n.Labels[m.Label]
	case m.Annotation != "":
		h = n.Annotations[m.Annotation]
	default:
		h = n.Name
	}
	h = strings.ToLower(strings.TrimSpace(h))
	return h, h != ""
}

// source names where Host reads a host, for messages.
func (m Mapping) source() string {
	switch {
	case m.Label != "":
		return "label " + m.Label
	case m.Annotation != "":
		return "annotation " + m.Annotation
	}
	return "node name"
}

// Rules are the operator's choices the plan follows.
type Rules struct {
	// Evict adds the NoExecute taint once a node has been without trust for
	// EvictAfter (the taint-eviction controller then evicts its pods).
	Evict      bool
	EvictAfter time.Duration
}

// standing is what the controller knows of a node's host.
type standing struct {
	host    string
	source  string // where the host was read (Mapping.source)
	mapped  bool   // the node names a host
	shared  bool   // another node names the same host
	verdict verdict.Verdict
	found   bool // the host has a verdict
}

// trusted is the only way to trust a node: mapped to a host of its own
// whose verdict is trusted now.
func (s standing) trusted(now time.Time) bool {
	return s.mapped && !s.shared && s.found && s.verdict.At(now) == verdict.Trusted
}

// level is the host's level now (unknown without a verdict).
func (s standing) level(now time.Time) verdict.Level {
	if !s.mapped || !s.found {
		return verdict.Unknown
	}
	return s.verdict.At(now)
}

// plan is what a node should carry.
type plan struct {
	node      *corev1.Node         // a copy with our taints, label and annotations as they should be
	condition corev1.NodeCondition // ours as it should be (times set when it changes)
	// condChanged says the node's condition differs from condition.
	condChanged bool
	// recheck, when positive, is when the node must be looked at again
	// (its grace period ends).
	recheck time.Duration
}

// planNode computes what node should carry given its host's standing.
// It never changes node, and keeps whatever is not ours: other taints in
// their order, other labels and annotations, and our taints' values and
// times when they are already right.
func planNode(node *corev1.Node, s standing, r Rules, now time.Time) plan {
	want := node.DeepCopy()
	trusted := s.trusted(now)
	level := s.level(now)
	stamp := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }

	// Annotations, copied before any change so node's maps stay untouched.
	ann := maps.Clone(node.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	set := func(k, v string) {
		if v == "" {
			delete(ann, k)
		} else {
			ann[k] = v
		}
	}
	set(AnnotationHost, s.host)
	set(AnnotationLevel, string(level))
	policy, vtime, expiry := "", "", ""
	if s.found && s.mapped {
		policy = s.verdict.Policy
		if !s.verdict.VTime.IsZero() {
			vtime = stamp(s.verdict.VTime)
		}
		if !s.verdict.Expiry.IsZero() {
			expiry = stamp(s.verdict.Expiry)
		}
	}
	set(AnnotationPolicy, policy)
	// vtime and expiry move with every attestation; writing each would be
	// a write per node per interval. They are rewritten with any other
	// change, and by themselves only when a sync finds the annotated expiry
	// passed — the periodic reconcile, at the latest — so a steady node
	// costs at most one write per reconcile period, and its annotated
	// expiry may lie up to that long in the past (the label and the taint
	// are current).
	if old, err := time.Parse(time.RFC3339, node.Annotations[AnnotationExpiry]); err == nil && now.Before(old) &&
		node.Annotations[AnnotationLevel] == string(level) && node.Annotations[AnnotationPolicy] == policy && vtime != "" && expiry != "" {
		vtime, expiry = node.Annotations[AnnotationVTime], node.Annotations[AnnotationExpiry]
	}
	set(AnnotationVTime, vtime)
	set(AnnotationExpiry, expiry)

	// Since when the node is without trust: kept on the node, so a restart
	// of the controller does not restart the grace period.
	// It is kept in whole seconds, rounded up, so the grace period is
	// never shorter than asked. A time in the future (a clock that went
	// back, a hand edit) is not believed.
	var since time.Time
	if !trusted {
		since = now.Truncate(time.Second)
		if since.Before(now) {
			since = since.Add(time.Second)
		}
		if t, err := time.Parse(time.RFC3339, node.Annotations[AnnotationUntrustedSince]); err == nil && !t.After(since) {
			since = t
		}
		set(AnnotationUntrustedSince, stamp(since))
	} else {
		delete(ann, AnnotationUntrustedSince)
	}
	want.Annotations = ann

	labels := maps.Clone(node.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	if trusted {
		labels[TrustedLabel] = "true"
	} else {
		delete(labels, TrustedLabel)
	}
	want.Labels = labels

	var p plan
	noExecute := false
	if !trusted && r.Evict {
		due := since.Add(r.EvictAfter)
		if !now.Before(due) {
			noExecute = true
		} else {
			p.recheck = due.Sub(now)
		}
	}
	want.Spec.Taints = ourTaints(node.Spec.Taints, !trusted, noExecute, now)
	p.node = want
	p.condition, p.condChanged = planCondition(node, s, level, trusted, now)
	return p
}

// ours reports whether a taint is one the controller manages.
func ours(t corev1.Taint) bool {
	return t.Key == TaintKey && (t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute)
}

// ourTaints returns taints with ours present or absent as asked: others
// keep their place, ours that are already right are kept as they are.
func ourTaints(taints []corev1.Taint, noSchedule, noExecute bool, now time.Time) []corev1.Taint {
	want := map[corev1.TaintEffect]bool{corev1.TaintEffectNoSchedule: noSchedule, corev1.TaintEffectNoExecute: noExecute}
	have := map[corev1.TaintEffect]bool{}
	var out []corev1.Taint
	for _, t := range taints {
		if ours(t) && (!want[t.Effect] || have[t.Effect]) {
			continue // not wanted, or a duplicate
		}
		if ours(t) {
			have[t.Effect] = true
		}
		out = append(out, t)
	}
	for _, e := range []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute} {
		if want[e] && !have[e] {
			t := corev1.Taint{Key: TaintKey, Effect: e}
			if e == corev1.TaintEffectNoExecute {
				// The taint-eviction controller counts tolerationSeconds
				// from here.
				t.TimeAdded = &metav1.Time{Time: now.Truncate(time.Second)}
			}
			out = append(out, t)
		}
	}
	return out
}

// planCondition returns our condition as it should be, and whether the
// node's differs (status, reason or message).
func planCondition(node *corev1.Node, s standing, level verdict.Level, trusted bool, now time.Time) (corev1.NodeCondition, bool) {
	c := corev1.NodeCondition{Type: ConditionType}
	switch {
	case !s.mapped:
		c.Status, c.Reason = corev1.ConditionUnknown, "NoHost"
		c.Message = "the node names no trustpool host (by its " + s.source + ")"
	case s.shared:
		c.Status, c.Reason = corev1.ConditionFalse, "SharedHost"
		c.Message = fmt.Sprintf("another node also names trustpool host %s: neither is trusted", s.host)
	case trusted:
		c.Status, c.Reason = corev1.ConditionTrue, "Trusted"
		c.Message = fmt.Sprintf("trustpool host %s is trusted", s.host)
		if s.verdict.Policy != "" {
			c.Message += " under " + s.verdict.Policy
		}
	case !s.found:
		c.Status, c.Reason = corev1.ConditionUnknown, "NotAttested"
		c.Message = fmt.Sprintf("trustpool host %s has no verdict", s.host)
	case level == verdict.Untrusted:
		c.Status, c.Reason = corev1.ConditionFalse, "Untrusted"
		c.Message = reasons(s.verdict, fmt.Sprintf("trustpool host %s is untrusted", s.host))
	case s.verdict.Level == verdict.Trusted || s.verdict.Level == verdict.Untrusted || slices.ContainsFunc(s.verdict.Reasons, func(r verdict.Reason) bool { return r.Code == verdict.CodeExpired }):
		c.Status, c.Reason = corev1.ConditionUnknown, "Expired"
		c.Message = fmt.Sprintf("the verdict on trustpool host %s expired at %s", s.host, s.verdict.Expiry.UTC().Format(time.RFC3339))
	default:
		c.Status, c.Reason = corev1.ConditionUnknown, "Unknown"
		c.Message = reasons(s.verdict, fmt.Sprintf("trustpool host %s is unknown", s.host))
	}
	if len(c.Message) > maxMessage {
		c.Message = strings.ToValidUTF8(c.Message[:maxMessage-3], "") + "..."
	}
	stamp := metav1.Time{Time: now.Truncate(time.Second)}
	c.LastHeartbeatTime, c.LastTransitionTime = stamp, stamp
	for _, old := range node.Status.Conditions {
		if old.Type != ConditionType {
			continue
		}
		if old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		return c, old.Status != c.Status || old.Reason != c.Reason || old.Message != c.Message
	}
	return c, true
}

// reasons is the verdict's reasons as one line after lead.
func reasons(v verdict.Verdict, lead string) string {
	if len(v.Reasons) == 0 {
		return lead
	}
	parts := make([]string, len(v.Reasons))
	for i, r := range v.Reasons {
		parts[i] = r.String()
	}
	return lead + ": " + strings.Join(parts, "; ")
}

// sameObject reports whether want differs from node in what the controller
// writes outside the status: labels, annotations, taints.
func sameObject(node, want *corev1.Node) bool {
	return maps.Equal(nonNil(node.Labels), want.Labels) && maps.Equal(nonNil(node.Annotations), want.Annotations) &&
		slices.EqualFunc(node.Spec.Taints, want.Spec.Taints, func(a, b corev1.Taint) bool { return a.MatchTaint(&b) && a.Value == b.Value })
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
