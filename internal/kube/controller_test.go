package kube

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"trustpool/internal/verdict"
)

// verdictMap is a Verdicts the test changes as the recorder would.
type verdictMap struct {
	mu sync.Mutex // guards m
	m  map[string]verdict.Verdict
}

func (v *verdictMap) Verdict(host string) (verdict.Verdict, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	got, ok := v.m[host]
	return got, ok
}

func (v *verdictMap) set(host string, l verdict.Level, validity time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[string]verdict.Verdict{}
	}
	now := time.Now()
	v.m[host] = verdict.Verdict{Host: host, Level: l, VTime: now, Expiry: now.Add(validity), Policy: "fleet v1"}
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// runController runs a controller until the test ends.
func runController(t *testing.T, cfg Config) *Controller {
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
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	return c
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
	v := &verdictMap{}
	v.set("good", verdict.Trusted, time.Hour)
	v.set("bad", verdict.Untrusted, time.Hour)
	var tmu sync.Mutex
	taints := map[string]int{}
	c := runController(t, Config{Client: cs, Verdicts: v, Sweep: time.Hour, Reconcile: time.Hour,
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
	v.set("good", verdict.Untrusted, time.Hour)
	c.Changed("GOOD")
	waitNode(t, cs, "good", 10*time.Second, "untrusted after the transition", untrustedNode)
	v.set("bad", verdict.Trusted, time.Hour)
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
	v := &verdictMap{}
	v.set("node1", verdict.Trusted, 2*time.Second)
	runController(t, Config{Client: cs, Verdicts: v, Sweep: 50 * time.Millisecond, Reconcile: time.Hour})
	waitNode(t, cs, "node1", 10*time.Second, "trusted", trustedNode)
	n := waitNode(t, cs, "node1", 10*time.Second, "untrusted after the expiry", untrustedNode)
	if c := condition(n); c == nil || c.Reason != "Expired" {
		t.Errorf("condition after expiry: %+v", c)
	}
}

// TestControllerLeaderElection: of two controllers sharing a Lease only
// one writes; when it stops, the other takes over and writes.
func TestControllerLeaderElection(t *testing.T) {
	cs := fake.NewClientset(newNode("node1"))
	v := &verdictMap{}
	v.set("node1", verdict.Trusted, time.Hour)
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
		c, err := New(Config{Client: cs, Verdicts: v, Identity: id, Sweep: 20 * time.Millisecond, Reconcile: time.Hour, Log: testLog(t),
			LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond,
			Leading: func(on bool) { mu.Lock(); leading[id] = on; mu.Unlock() }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		var once sync.Once
		stop[id] = func() {
			once.Do(func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("controller %s: %v", id, err)
				}
			})
		}
		t.Cleanup(stop[id])
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
	v.set("node1", verdict.Untrusted, time.Hour)
	waitNode(t, cs, "node1", 10*time.Second, "untrusted under the new writer", untrustedNode)
}
