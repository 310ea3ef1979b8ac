package kube_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"trustpool/internal/fleetsim/fleet"
	"trustpool/internal/kube"
	"trustpool/internal/kube/kubetest"
	"trustpool/internal/server"
	"trustpool/internal/verdict"
)

// TestKubeTrustedPool runs trustpool's node controller in `trustpool
// server` against a real control plane (kube-apiserver, kube-scheduler,
// kube-controller-manager's taint-eviction controller) with Nodes for
// simulated, attested hosts: the guide's trusted workload is bound by the
// real scheduler only to trusted nodes; a node never attested stays
// tainted; a node whose hypervisor is tampered with is tainted, receives
// no new pod and, with eviction on, loses its pods.
func TestKubeTrustedPool(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{Scheduler: true, ControllerManager: true})
	admin := client(t, c.Kubeconfig)
	ctx := context.Background()

	const n = 3
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("node-%05d.fleet.test", i+1)
		createNode(t, admin, hosts[i], registerTaint)
	}
	createNode(t, admin, "stranger.fleet.test", registerTaint) // never enrolled

	tp := startTrustpool(t, n, func(cfg *server.Config) {
		cfg.Kube = &kube.Config{Client: client(t, c.Kubeconfig), LeaseNamespace: "default",
			Rules: kube.Rules{Evict: true, EvictAfter: 2 * time.Second}}
	})
	for _, h := range hosts {
		nd := waitNode(t, admin, h, "trusted, with its condition", func(n *corev1.Node) bool {
			c := condition(n)
			return trusted(n) && c != nil && c.Status == corev1.ConditionTrue
		})
		if nd.Annotations[kube.AnnotationLevel] != "trusted" || nd.Annotations[kube.AnnotationPolicy] == "" || nd.Annotations[kube.AnnotationExpiry] == "" {
			t.Errorf("%s: annotations %v", h, nd.Annotations)
		}
	}
	stranger := waitNode(t, admin, "stranger.fleet.test", "tainted NoExecute after the grace period", func(n *corev1.Node) bool {
		return untrusted(n) && taint(n, corev1.TaintEffectNoExecute)
	})
	if c := condition(stranger); c == nil || c.Reason != "NotAttested" {
		t.Errorf("stranger: condition %+v, want NotAttested", c)
	}

	// A workload for any node (it tolerates trustpool's taint) may run on
	// the stranger, kept to it here by its name, and stays there.
	anywhere := docPod(t, "any-node-pod.yaml", "anywhere")
	anywhere.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{{
			Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"stranger.fleet.test"}}}}}}}}
	createPod(t, admin, anywhere)
	if node := boundTo(t, admin, "anywhere"); node != "stranger.fleet.test" {
		t.Errorf("the pod for any node bound to %s", node)
	}

	// The trusted workload lands on trusted nodes only (the stranger is
	// tainted and unlabelled).
	var pods []string
	for i := range 6 {
		p := trustedPod(t, fmt.Sprintf("trusted-%d", i))
		createPod(t, admin, p)
		pods = append(pods, p.Name)
	}
	// One pod of the workload is bound to the node to be tampered with, as
	// the scheduler could have placed it.
	victim := trustedPod(t, "victim")
	victim.Spec.NodeName = hosts[1]
	createPod(t, admin, victim)
	for _, p := range pods {
		if node := boundTo(t, admin, p); !slices.Contains(hosts, node) {
			t.Errorf("pod %s bound to %s, not a trusted node", p, node)
		}
	}

	// The tampered reboot: the hello makes the server attest at once.
	tp.reboot(t, hosts[1], fleet.Tampered)
	tp.waitLevel(t, hosts[1], verdict.Untrusted)
	bad := waitNode(t, admin, hosts[1], "untrusted after the tampered reboot", func(n *corev1.Node) bool {
		c := condition(n)
		return untrusted(n) && c != nil && c.Reason == "Untrusted"
	})
	if bad.Annotations[kube.AnnotationLevel] != "untrusted" {
		t.Errorf("%s: level annotation %q", hosts[1], bad.Annotations[kube.AnnotationLevel])
	}
	for i := range 6 {
		p := trustedPod(t, fmt.Sprintf("after-%d", i))
		createPod(t, admin, p)
		if node := boundTo(t, admin, p.Name); node == hosts[1] || !slices.Contains(hosts, node) {
			t.Errorf("pod %s bound to %s after %s turned untrusted", p.Name, node, hosts[1])
		}
	}

	// Eviction: after the grace period the NoExecute taint, and the
	// taint-eviction controller deletes the pods on the node; the pods on
	// trusted nodes stay.
	waitNode(t, admin, hosts[1], "tainted NoExecute", func(n *corev1.Node) bool { return taint(n, corev1.TaintEffectNoExecute) })
	list, err := admin.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		if p.Spec.NodeName != hosts[1] {
			continue
		}
		waitFor(t, "pod "+p.Name+" evicted from "+hosts[1], func() bool {
			got, err := admin.CoreV1().Pods("default").Get(ctx, p.Name, metav1.GetOptions{})
			return gone(err) || err == nil && got.DeletionTimestamp != nil
		})
	}
	list, err = admin.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Items {
		if p.Spec.NodeName != hosts[1] && p.DeletionTimestamp != nil {
			t.Errorf("pod %s on trusted node %s is being deleted", p.Name, p.Spec.NodeName)
		}
	}

	// A good reboot brings the node back: the label returns, both taints
	// go.
	tp.reboot(t, hosts[1], fleet.Hypervisor)
	waitNode(t, admin, hosts[1], "trusted again after a good reboot", trusted)

	// A host deleted from trustpool: its Node is out of the pool at once.
	if err := tp.api.Do(ctx, "DELETE", "/v1/hosts/"+hosts[2], nil, nil); err != nil {
		t.Fatal(err)
	}
	waitNode(t, admin, hosts[2], "tainted after its host was deleted", func(n *corev1.Node) bool {
		c := condition(n)
		return untrusted(n) && c != nil && c.Reason == "NotAttested"
	})

	// The metrics say what happened (docs/metrics.md).
	text := tp.metrics(t)
	for _, want := range []string{
		`trustpool_kube_leader 1`,
		`trustpool_kube_api_errors_total{op="patch_node"} 0`,
	} {
		if !bytes.Contains(text, []byte("\n"+want+"\n")) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, series := range []string{
		`trustpool_kube_taint_changes_total{change="added",effect="NoSchedule"}`,
		`trustpool_kube_taint_changes_total{change="removed",effect="NoSchedule"}`,
		`trustpool_kube_taint_changes_total{change="added",effect="NoExecute"}`,
		`trustpool_kube_taint_changes_total{change="removed",effect="NoExecute"}`,
	} {
		if v := metricValue(t, text, series); v < 1 {
			t.Errorf("%s = %v, want at least 1", series, v)
		}
	}
}

// TestKubeExpiry: a verdict that expires (the node is not attested again)
// becomes unknown through the recorder, and the controller taints its
// Node, saying why.
func TestKubeExpiry(t *testing.T) {
	const host = firstHost
	admin, tp := startTrustedNode(t, func(cfg *server.Config) {
		cfg.Integrity.Validity = 10 * time.Second // and an interval of an hour: no attestation renews it
		cfg.Kube.Sweep = time.Hour
	})
	tp.waitLevel(t, host, verdict.Unknown)
	n := waitNode(t, admin, host, "tainted after the expiry", func(n *corev1.Node) bool {
		c := condition(n)
		return untrusted(n) && c != nil && c.Reason == "Expired"
	})
	if n.Annotations[kube.AnnotationLevel] != "unknown" {
		t.Errorf("level annotation %q after the expiry", n.Annotations[kube.AnnotationLevel])
	}
}
