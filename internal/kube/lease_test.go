package kube_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"trustpool/internal/kube"
	"trustpool/internal/kube/kubetest"
	"trustpool/internal/verdict"
)

// writes counts a client's writes to Nodes.
type writes struct {
	n  atomic.Int64
	rt http.RoundTripper
}

func (w *writes) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/v1/nodes") {
		w.n.Add(1)
	}
	return w.rt.RoundTrip(r)
}

// countingClient is an admin client whose Node writes are counted.
func countingClient(t *testing.T, c *kubetest.Cluster) (kubernetes.Interface, *writes) {
	t.Helper()
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	w := &writes{}
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { w.rt = rt; return w })
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	return cs, w
}

// replica is one controller the test starts and stops.
type replica struct {
	id      string
	writes  *writes
	leading atomic.Bool
	stop    func()
}

func startReplica(t *testing.T, c *kubetest.Cluster, id string, v kube.Verdicts) *replica {
	t.Helper()
	cs, w := countingClient(t, c)
	r := &replica{id: id, writes: w}
	ctl, err := kube.New(kube.Config{Client: cs, Verdicts: v, Identity: id, Log: testLog(t).With("replica", id),
		Sweep: 100 * time.Millisecond, LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond,
		Leading: r.leading.Store})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("controller %s: %v", id, err)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// versions are the Nodes' resourceVersions: equal when nobody wrote.
func versions(t *testing.T, cs kubernetes.Interface) map[string]string {
	t.Helper()
	l, err := cs.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range l.Items {
		out[n.Name] = n.ResourceVersion
	}
	return out
}

// TestKubeLeadership: against a real apiserver, the controller's Lease
// makes one writer of several; a takeover and a restart write nothing to
// Nodes that are right (not even the grace period's start); a controller
// whose Lease is taken stops writing and writes again once it holds it.
func TestKubeLeadership(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{})
	admin := client(t, c.Kubeconfig)
	ctx := context.Background()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: kube.DefaultLeaseNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	foreign := corev1.Taint{Key: "example.com/dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}
	createNode(t, admin, "n1", registerTaint, foreign)
	createNode(t, admin, "n2", registerTaint)
	createNode(t, admin, "n3", registerTaint)
	v := &kube.FakeVerdicts{}
	v.Set("n1", verdict.Trusted, time.Now(), time.Hour)
	v.Set("n2", verdict.Untrusted, time.Now(), time.Hour)
	steady := func() {
		t.Helper()
		waitNode(t, admin, "n1", "trusted", func(n *corev1.Node) bool { return trusted(n) && condition(n) != nil })
		waitNode(t, admin, "n2", "untrusted", func(n *corev1.Node) bool { return untrusted(n) && condition(n) != nil })
		waitNode(t, admin, "n3", "untrusted", func(n *corev1.Node) bool { return untrusted(n) && condition(n) != nil })
	}

	a := startReplica(t, c, "a", v)
	steady()
	n1 := getNode(t, admin, "n1")
	if len(n1.Spec.Taints) != 1 || n1.Spec.Taints[0] != foreign {
		t.Errorf("n1: taints %v, want only the foreign one", n1.Spec.Taints)
	}
	b := startReplica(t, c, "b", v)
	waitFor(t, "a leading", a.leading.Load)
	before := versions(t, admin)
	since := getNode(t, admin, "n2").Annotations[kube.AnnotationUntrustedSince]

	// a stops, giving the Lease back: b takes over, reads every Node, and
	// has nothing to write.
	a.stop()
	if l, err := admin.CoordinationV1().Leases(kube.DefaultLeaseNamespace).Get(ctx, kube.DefaultLeaseName, metav1.GetOptions{}); err != nil ||
		l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == "a" {
		t.Errorf("a stopped but holds the Lease: %v %v", l.Spec.HolderIdentity, err)
	}
	waitFor(t, "b leading after a stopped", b.leading.Load)
	// A change proves b writes: n3 gets a verdict.
	v.Set("n3", verdict.Trusted, time.Now(), time.Hour)
	waitNode(t, admin, "n3", "trusted, written by b", trusted)
	time.Sleep(500 * time.Millisecond) // five sweeps
	after := versions(t, admin)
	for _, n := range []string{"n1", "n2"} {
		if before[n] != after[n] {
			t.Errorf("the takeover wrote %s (resourceVersion %s → %s)", n, before[n], after[n])
		}
	}
	if got := getNode(t, admin, "n2").Annotations[kube.AnnotationUntrustedSince]; got != since {
		t.Errorf("the takeover moved n2's untrusted-since from %s to %s", since, got)
	}
	if w := b.writes.n.Load(); w != 2 { // n3: the patch and its condition
		t.Errorf("b wrote Nodes %d times, want 2 (n3 and its condition)", w)
	}

	// A restart (a new controller, as after a crash) writes nothing either.
	b.stop()
	before = versions(t, admin)
	a2 := startReplica(t, c, "a", v)
	waitFor(t, "the restarted a leading", a2.leading.Load)
	time.Sleep(500 * time.Millisecond)
	if after := versions(t, admin); !equal(before, after) || a2.writes.n.Load() != 0 {
		t.Errorf("the restart wrote %d times: %v → %v", a2.writes.n.Load(), before, after)
	}

	// Someone else takes the Lease (a partition healed the other way):
	// a stops writing; a change waits; once the Lease is free again a
	// writes it.
	lease, err := admin.CoordinationV1().Leases(kube.DefaultLeaseNamespace).Get(ctx, kube.DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	intruder, hour := "intruder", int32(3600)
	lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds = &intruder, &hour
	lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	if _, err := admin.CoordinationV1().Leases(kube.DefaultLeaseNamespace).Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to stop writing after losing the Lease", func() bool { return !a2.leading.Load() })
	v.Set("n2", verdict.Trusted, time.Now(), time.Hour)
	rv := getNode(t, admin, "n2").ResourceVersion
	time.Sleep(time.Second) // ten sweeps
	if n2 := getNode(t, admin, "n2"); n2.ResourceVersion != rv || !untrusted(n2) {
		t.Errorf("a wrote n2 without the Lease")
	}
	lease, err = admin.CoordinationV1().Leases(kube.DefaultLeaseNamespace).Get(ctx, kube.DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	free := ""
	lease.Spec.HolderIdentity = &free
	if _, err := admin.CoordinationV1().Leases(kube.DefaultLeaseNamespace).Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitNode(t, admin, "n2", "trusted once a holds the Lease again", trusted)
	if !a2.leading.Load() {
		t.Error("n2 written, but a does not say it leads")
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
