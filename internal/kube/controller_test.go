package kube

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"trustpool/internal/verdict"
)

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// runController runs a controller until the test ends; stop ends it
// sooner (once, however often it is called).
func runController(t *testing.T, cfg Config) (c *Controller, stop func()) {
	t.Helper()
	if cfg.Log == nil {
		cfg.Log = testLog(t)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller %q: %v", cfg.Identity, err)
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// waitNode polls the node until ok says yes, or fails the test after d.
func waitNode(t *testing.T, cs kubernetes.Interface, name string, d time.Duration, what string, ok func(*corev1.Node) bool) *corev1.Node {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		n, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && ok(n) {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s: not %s after %v: %+v (err %v)", name, what, d, n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func trustedNode(n *corev1.Node) bool {
	return n.Labels[TrustedLabel] == "true" && !hasTaint(n, corev1.TaintEffectNoSchedule)
}

func untrustedNode(n *corev1.Node) bool {
	return n.Labels[TrustedLabel] == "" && hasTaint(n, corev1.TaintEffectNoSchedule)
}

func newNode(name string, taints ...corev1.Taint) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: taints}}
}

// TestControllerFake runs the controller against client-go's fake
// clientset: the first pass, a transition, a new node, someone else's
// taint, and a node whose label is removed by hand.
func TestControllerFake(t *testing.T) {
	other := corev1.Taint{Key: "example.com/maintenance", Value: "yes", Effect: corev1.TaintEffectNoSchedule}
	cs := fake.NewClientset(newNode("good"), newNode("bad", other), newNode("new"))
	v := &FakeVerdicts{}
	v.Set("good", verdict.Trusted, time.Now(), time.Hour)
	v.Set("bad", verdict.Untrusted, time.Now(), time.Hour)
	var tmu sync.Mutex
	taints := map[string]int{}
	c, _ := runController(t, Config{Client: cs, Verdicts: v, Sweep: time.Hour, Reconcile: time.Hour,
		TaintChanged: func(e string, added bool) {
			tmu.Lock()
			defer tmu.Unlock()
			if added {
				taints[e]++
			} else {
				taints[e]--
			}
		}})

	n := waitNode(t, cs, "good", 10*time.Second, "trusted with its condition", func(n *corev1.Node) bool { return trustedNode(n) && condition(n) != nil })
	if n.Annotations[AnnotationPolicy] != "fleet v1" || n.Annotations[AnnotationLevel] != "trusted" || condition(n) == nil || condition(n).Status != corev1.ConditionTrue {
		t.Errorf("good: annotations %v, condition %+v", n.Annotations, condition(n))
	}
	n = waitNode(t, cs, "bad", 10*time.Second, "untrusted", untrustedNode)
	if !taintsEqual(n.Spec.Taints[:1], []corev1.Taint{other}) {
		t.Errorf("bad: someone else's taint moved or changed: %v", n.Spec.Taints)
	}
	waitNode(t, cs, "new", 10*time.Second, "untrusted (no verdict)", untrustedNode)

	// A transition reaches the node through Changed, not a sweep (an hour).
	v.Set("good", verdict.Untrusted, time.Now(), time.Hour)
	c.Changed("GOOD")
	waitNode(t, cs, "good", 10*time.Second, "untrusted after the transition", untrustedNode)
	v.Set("bad", verdict.Trusted, time.Now(), time.Hour)
	c.Changed("bad")
	n = waitNode(t, cs, "bad", 10*time.Second, "trusted after the transition", trustedNode)
	if !taintsEqual(n.Spec.Taints, []corev1.Taint{other}) {
		t.Errorf("bad: taints %v, want only someone else's", n.Spec.Taints)
	}

	// A node registered later is tainted from the informer's event.
	if _, err := cs.CoreV1().Nodes().Create(context.Background(), newNode("later"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitNode(t, cs, "later", 10*time.Second, "untrusted (new node)", untrustedNode)

	// Someone puts the label on an untrusted node: it is taken off again.
	n, _ = cs.CoreV1().Nodes().Get(context.Background(), "good", metav1.GetOptions{})
	n.Labels = map[string]string{TrustedLabel: "true"}
	n.Spec.Taints = nil
	if _, err := cs.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitNode(t, cs, "good", 10*time.Second, "untrusted after a hand edit", untrustedNode)

	tmu.Lock()
	defer tmu.Unlock()
	// good: -1 +1 (hand edit) +1; bad: +1 -1; new +1; later +1 → 3... as
	// counted: every addition and removal of NoSchedule by the controller.
	if taints["NoSchedule"] != 4 || taints["NoExecute"] != 0 {
		t.Errorf("taint changes counted %v, want NoSchedule net +4 (new, later, good twice; bad added and removed)", taints)
	}
}

// TestControllerExpiry: a verdict that expires without any transition
// being reported is caught by the sweep.
func TestControllerExpiry(t *testing.T) {
	cs := fake.NewClientset(newNode("node1"))
	v := &FakeVerdicts{}
	v.Set("node1", verdict.Trusted, time.Now(), 2*time.Second)
	runController(t, Config{Client: cs, Verdicts: v, Sweep: 50 * time.Millisecond, Reconcile: time.Hour})
	waitNode(t, cs, "node1", 10*time.Second, "trusted", trustedNode)
	waitNode(t, cs, "node1", 10*time.Second, "untrusted after the expiry, its condition saying so", func(n *corev1.Node) bool {
		c := condition(n)
		return untrustedNode(n) && c != nil && c.Reason == "Expired" && c.Status == corev1.ConditionUnknown
	})
}

// TestControllerLeaderElection: of two controllers sharing a Lease only
// one writes; when it stops, the other takes over and writes.
func TestControllerLeaderElection(t *testing.T) {
	cs := fake.NewClientset(newNode("node1"))
	v := &FakeVerdicts{}
	v.Set("node1", verdict.Trusted, time.Now(), time.Hour)
	var mu sync.Mutex
	leading := map[string]bool{}
	leaders := func() (ids []string) {
		mu.Lock()
		defer mu.Unlock()
		for id, on := range leading {
			if on {
				ids = append(ids, id)
			}
		}
		return ids
	}
	stop := map[string]func(){}
	for _, id := range []string{"a", "b"} {
		_, stop[id] = runController(t, Config{Client: cs, Verdicts: v, Identity: id, Sweep: 20 * time.Millisecond, Reconcile: time.Hour,
			LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond,
			Leading: func(on bool) { mu.Lock(); leading[id] = on; mu.Unlock() }})
	}

	waitNode(t, cs, "node1", 10*time.Second, "trusted", trustedNode)
	deadline := time.Now().Add(10 * time.Second)
	for len(leaders()) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("leaders %v, want one", leaders())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 20 { // a while: never two at once
		if l := leaders(); len(l) > 1 {
			t.Fatalf("two writers at once: %v", l)
		}
		time.Sleep(20 * time.Millisecond)
	}
	first := leaders()[0]
	second := map[string]string{"a": "b", "b": "a"}[first]
	stop[first]()
	if l := leaders(); len(l) > 0 && l[0] == first {
		t.Fatalf("%s still writes after it stopped", first)
	}
	deadline = time.Now().Add(10 * time.Second)
	for l := leaders(); len(l) != 1 || l[0] != second; l = leaders() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s stopped: leaders %v, want %s", first, l, second)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The new writer writes: a transition reaches the node (by its sweep).
	v.Set("node1", verdict.Untrusted, time.Now(), time.Hour)
	waitNode(t, cs, "node1", 10*time.Second, "untrusted under the new writer", untrustedNode)
}

// TestControllerConflict: a write refused because the Node changed since
// it was read (409) is made again on the Node read afresh, and the patch
// always carries the resourceVersion it was computed from.
func TestControllerConflict(t *testing.T) {
	n := newNode("node1")
	n.ResourceVersion = "7" // the fake keeps what it is given; the apiserver always sets one
	cs := fake.NewClientset(n)
	var (
		mu        sync.Mutex
		patches   int
		withoutRV int
	)
	cs.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.PatchAction)
		if p.GetSubresource() != "" {
			return false, nil, nil
		}
		mu.Lock()
		defer mu.Unlock()
		patches++
		if !strings.Contains(string(p.GetPatch()), `"resourceVersion"`) {
			withoutRV++
		}
		if patches == 1 {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "node1", errors.New("the object has been modified"))
		}
		return false, nil, nil
	})
	v := &FakeVerdicts{}
	v.Set("node1", verdict.Trusted, time.Now(), time.Hour)
	var apiErrors atomic.Int64
	runController(t, Config{Client: cs, Verdicts: v, Sweep: time.Hour, Reconcile: time.Hour, APIError: func(string) { apiErrors.Add(1) }})
	waitNode(t, cs, "node1", 10*time.Second, "trusted after the conflict", trustedNode)
	mu.Lock()
	defer mu.Unlock()
	if patches != 2 || withoutRV != 0 || apiErrors.Load() != 0 {
		t.Errorf("%d patches (want 2: refused, then made again), %d without a resourceVersion, %d API errors counted", patches, withoutRV, apiErrors.Load())
	}
}

// TestControllerReconcile: the periodic reconcile writes a change nothing
// reported (no Changed, no sweep).
func TestControllerReconcile(t *testing.T) {
	cs := fake.NewClientset(newNode("node1"))
	v := &FakeVerdicts{}
	runController(t, Config{Client: cs, Verdicts: v, Sweep: time.Hour, Reconcile: 100 * time.Millisecond})
	waitNode(t, cs, "node1", 10*time.Second, "untrusted (no verdict)", untrustedNode)
	v.Set("node1", verdict.Trusted, time.Now(), time.Hour)
	waitNode(t, cs, "node1", 10*time.Second, "trusted by the reconcile", trustedNode)
}

// TestControllerSharedHost: Nodes mapped by a label; two naming the same
// host are both untrusted until one names another.
func TestControllerSharedHost(t *testing.T) {
	const label = "node-restriction.kubernetes.io/trustpool-host"
	labelled := func(name, host string) *corev1.Node {
		n := newNode(name)
		n.Labels = map[string]string{label: host}
		return n
	}
	cs := fake.NewClientset(labelled("a", "compute-1.example"), labelled("b", "compute-1.example"), labelled("c", "compute-2.example"))
	v := &FakeVerdicts{}
	v.Set("compute-1.example", verdict.Trusted, time.Now(), time.Hour)
	v.Set("compute-2.example", verdict.Trusted, time.Now(), time.Hour)
	runController(t, Config{Client: cs, Verdicts: v, Mapping: Mapping{Label: label}, Sweep: time.Hour, Reconcile: time.Hour})
	waitNode(t, cs, "c", 10*time.Second, "trusted", trustedNode)
	for _, n := range []string{"a", "b"} {
		got := waitNode(t, cs, n, 10*time.Second, "untrusted (shared host)", func(n *corev1.Node) bool {
			c := condition(n)
			return untrustedNode(n) && c != nil && c.Reason == "SharedHost"
		})
		if got.Annotations[AnnotationHost] != "compute-1.example" {
			t.Errorf("%s: host annotation %q", n, got.Annotations[AnnotationHost])
		}
	}
	b, _ := cs.CoreV1().Nodes().Get(context.Background(), "b", metav1.GetOptions{})
	b.Labels[label] = "compute-3.example"
	if _, err := cs.CoreV1().Nodes().Update(context.Background(), b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitNode(t, cs, "a", 10*time.Second, "trusted once it alone names its host", trustedNode)
	waitNode(t, cs, "b", 10*time.Second, "untrusted (compute-3 has no verdict)", untrustedNode)
}

// TestExtenderThroughController: with hosts mapped by a label, the
// extender's names-only requests are mapped through the controller's
// Node cache.
func TestExtenderThroughController(t *testing.T) {
	const label = "node-restriction.kubernetes.io/trustpool-host"
	n := newNode("ip-10-0-0-1")
	n.Labels = map[string]string{label: "compute-1.example"}
	cs := fake.NewClientset(n, newNode("ip-10-0-0-2"))
	v := &FakeVerdicts{}
	v.Set("compute-1.example", verdict.Trusted, time.Now(), time.Hour)
	c, _ := runController(t, Config{Client: cs, Verdicts: v, Mapping: Mapping{Label: label}, Sweep: time.Hour, Reconcile: time.Hour})
	waitNode(t, cs, "ip-10-0-0-1", 10*time.Second, "trusted", trustedNode)
	e, err := NewExtender(ExtenderConfig{Verdicts: v, Mapping: Mapping{Label: label}, Nodes: c})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"ip-10-0-0-1", "ip-10-0-0-2", "ip-10-0-0-3"}
	cands, err := e.decide(&extenderv1.ExtenderArgs{NodeNames: &names})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ip-10-0-0-1": "", "ip-10-0-0-2": "names no trustpool host", "ip-10-0-0-3": "not known"}
	for _, cand := range cands {
		if w := want[cand.name]; cand.trusted != (w == "") || !strings.Contains(cand.why, w) {
			t.Errorf("%s: trusted %v (%q), want %q", cand.name, cand.trusted, cand.why, w)
		}
	}
}

// TestControllerBackoff: a Node whose writes the API server refuses is
// tried again with backoff, not at every sweep, and each failure counts.
func TestControllerBackoff(t *testing.T) {
	cs := fake.NewClientset(newNode("node1"))
	var patches atomic.Int64
	cs.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		patches.Add(1)
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "node1", errors.New("RBAC says no"))
	})
	var failures atomic.Int64
	runController(t, Config{Client: cs, Verdicts: &FakeVerdicts{}, Sweep: 10 * time.Millisecond, Reconcile: time.Hour,
		APIError: func(op string) {
			if op == "patch_node" {
				failures.Add(1)
			}
		}})
	deadline := time.Now().Add(10 * time.Second)
	for patches.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d patches tried", patches.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second) // a hundred sweeps
	// Backoff from 100 ms doubling: within about 1.5 s at most 5 or so
	// tries; a try at every sweep would be over a hundred.
	if n := patches.Load(); n > 10 {
		t.Errorf("%d patches of a refused Node in about a second: the sweep bypasses the backoff", n)
	}
	if failures.Load() != patches.Load() {
		t.Errorf("%d failures counted for %d refused patches", failures.Load(), patches.Load())
	}
}
