package kube_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/retry"

	"trustpool/internal/api"
	"trustpool/internal/fleetsim/fleet"
	"trustpool/internal/httpjson"
	"trustpool/internal/integrity"
	"trustpool/internal/kube"
	"trustpool/internal/kube/kubetest"
	"trustpool/internal/server"
	"trustpool/internal/server/servertest"
	"trustpool/internal/verdict"
)

// TestMain sends client-go's own log lines (klog) at warning and above to
// standard error: the controller's are in each test's log.
func TestMain(m *testing.M) {
	kube.LogTo(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}

// wait is how long the tests wait for the control plane to act: generous,
// because the whole suite shares two cores; the benchmark measures how
// long it really takes.
const wait = time.Minute

// waitFor polls cond until it holds, or fails the test after wait.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", wait, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client connects to the cluster as the kubeconfig says.
func client(t testing.TB, kubeconfig string) kubernetes.Interface {
	t.Helper()
	cs, err := kube.NewClient(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// createNode registers a Node as a kubelet would (with taints, capacity
// and a Ready condition), without a kubelet behind it.
func createNode(t testing.TB, cs kubernetes.Interface, name string, taints ...corev1.Taint) *corev1.Node {
	t.Helper()
	ctx := context.Background()
	n, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: taints}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods: resource.MustParse("110")}
	now := metav1.Now()
	// The controller may write the new Node first (its condition): a
	// conflict re-reads the Node and keeps what the controller wrote.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n.Status.Capacity, n.Status.Allocatable = capacity, capacity
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now})
		updated, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		if err == nil {
			n = updated
			return nil
		}
		if apierrors.IsConflict(err) {
			if fresh, gerr := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); gerr == nil {
				n = fresh
			}
		}
		return err
	})
	if err != nil {
		t.Fatalf("node %s status: %v", name, err)
	}
	return n
}

// registerTaint is what kubelets register with (docs/kubernetes/kubelet-config.yaml).
var registerTaint = corev1.Taint{Key: kube.TaintKey, Effect: corev1.TaintEffectNoSchedule}

func getNode(t testing.TB, cs kubernetes.Interface, name string) *corev1.Node {
	t.Helper()
	n, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get node %s: %v", name, err)
	}
	return n
}

func taint(n *corev1.Node, e corev1.TaintEffect) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == kube.TaintKey && t.Effect == e {
			return true
		}
	}
	return false
}

// trusted: the label on, our taints off.
func trusted(n *corev1.Node) bool {
	return n.Labels[kube.TrustedLabel] == "true" && !taint(n, corev1.TaintEffectNoSchedule) && !taint(n, corev1.TaintEffectNoExecute)
}

// untrusted: the label off, the NoSchedule taint on.
func untrusted(n *corev1.Node) bool {
	return n.Labels[kube.TrustedLabel] == "" && taint(n, corev1.TaintEffectNoSchedule)
}

func condition(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == kube.ConditionType {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// waitNode waits until the node is as ok says.
func waitNode(t testing.TB, cs kubernetes.Interface, name, what string, ok func(*corev1.Node) bool) *corev1.Node {
	t.Helper()
	var n *corev1.Node
	waitFor(t, "node "+name+" "+what, func() bool {
		got, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		n = got
		return err == nil && ok(got)
	})
	return n
}

// doc reads a file of the Kubernetes guide (docs/kubernetes/), which
// docs/kubernetes.md includes verbatim (TestKubeDocIncludesManifests).
func doc(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "kubernetes", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// objects decodes the documents of a manifest file into typed objects.
func objects(t testing.TB, manifest []byte) []runtime.Object {
	t.Helper()
	var out []runtime.Object
	for _, d := range bytes.Split(manifest, []byte("\n---\n")) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(d, nil, nil)
		if err != nil {
			t.Fatalf("decode manifest document: %v\n%s", err, d)
		}
		out = append(out, obj)
	}
	return out
}

// trustedPod is the guide's trusted workload, named name.
func trustedPod(t testing.TB, name string) *corev1.Pod { return docPod(t, "trusted-pod.yaml", name) }

// docPod is the Pod of a manifest of the guide, named name.
func docPod(t testing.TB, file, name string) *corev1.Pod {
	t.Helper()
	objs := objects(t, doc(t, file))
	p, ok := objs[0].(*corev1.Pod)
	if len(objs) != 1 || !ok {
		t.Fatalf("%s: want one Pod, got %T", file, objs)
	}
	p.Name = name
	return p
}

// createPod creates p in the default namespace.
func createPod(t testing.TB, cs kubernetes.Interface, p *corev1.Pod) {
	t.Helper()
	if _, err := cs.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", p.Name, err)
	}
}

// boundTo waits until the pod is bound and returns its node.
func boundTo(t testing.TB, cs kubernetes.Interface, name string) string {
	t.Helper()
	var node string
	waitFor(t, "pod "+name+" bound", func() bool {
		p, err := cs.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			node = p.Spec.NodeName
		}
		return node != ""
	})
	return node
}

// unschedulable waits until the scheduler has said the pod fits no node,
// and returns what it said.
func unschedulable(t testing.TB, cs kubernetes.Interface, name string) string {
	t.Helper()
	var msg string
	waitFor(t, "pod "+name+" unschedulable", func() bool {
		p, err := cs.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		if p.Spec.NodeName != "" {
			t.Fatalf("pod %s was bound to %s", name, p.Spec.NodeName)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				msg = c.Message
				return true
			}
		}
		return false
	})
	return msg
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// trustpool is a running attestation server with a simulated fleet.
type trustpool struct {
	srv   *server.Server
	api   *httpjson.Client
	fleet *fleet.Fleet
}

// startTrustpool starts a server (edit may change its config first) and a
// fleet of n simulated nodes (node-0000N.fleet.test), enrolls them and
// makes the first the golden host, so that all are trusted.
func startTrustpool(t testing.TB, n int, edit func(*server.Config)) *trustpool {
	t.Helper()
	log := testLog(t)
	cfg := server.Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0", Log: log, EnrollPerMinute: 6000,
		Integrity: integrity.Config{Interval: time.Hour, Log: log}}
	if edit != nil {
		edit(&cfg)
	}
	srv, ctx, tok := servertest.Start(t, cfg)
	tp := &trustpool{srv: srv, api: api.NewClient(srv.URL(), srv.CAPEM(), tok)}
	if n == 0 {
		return tp
	}
	var err error
	tp.fleet, err = fleet.New(fleet.Config{Server: srv.URL(), ServerCA: srv.CAPEM(), Nodes: n, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		JoinToken: fleet.AdminJoinTokens(tp.api)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.fleet.Close() })
	if got, err := tp.fleet.Enroll(ctx); err != nil || got != n {
		t.Fatalf("enrolled %d of %d nodes: %v", got, n, err)
	}
	// A hello has each node attested now: the first challenge, made as
	// the enrollment ended, may have found the node's listener without
	// its new certificate yet, and the interval is long.
	if err := tp.fleet.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	golden := tp.fleet.Nodes()[0].Name
	waitFor(t, "verified evidence of the golden host", func() bool {
		var bundle map[string]any
		return tp.api.Do(ctx, "GET", "/v1/hosts/"+golden+"/evidence", nil, &bundle) == nil
	})
	if err := tp.api.Do(ctx, "POST", "/v1/golden", map[string]string{"host": golden}, nil); err != nil {
		t.Fatal(err)
	}
	for _, nd := range tp.fleet.Nodes() {
		tp.waitLevel(t, nd.Name, verdict.Trusted)
	}
	return tp
}

// firstHost is the name of the first node of startTrustpool's fleet.
const firstHost = "node-00001.fleet.test"

// startTrustedNode starts a control plane with firstHost registered as a
// Node, and a server with a one-node fleet whose Kubernetes controller
// (edit may change the config, its Kube part too) writes to it; it
// returns once the Node is trusted, with an admin client.
func startTrustedNode(t testing.TB, edit func(*server.Config)) (kubernetes.Interface, *trustpool) {
	t.Helper()
	c := kubetest.Start(t, kubetest.Options{})
	admin := client(t, c.Kubeconfig)
	createNode(t, admin, firstHost, registerTaint)
	tp := startTrustpool(t, 1, func(cfg *server.Config) {
		cfg.Kube = &kube.Config{Client: client(t, c.Kubeconfig), LeaseNamespace: "default"}
		if edit != nil {
			edit(cfg)
		}
	})
	waitNode(t, admin, firstHost, "trusted", trusted)
	return admin, tp
}

// waitLevel waits until the server's verdict cache holds host at level.
func (tp *trustpool) waitLevel(t testing.TB, host string, l verdict.Level) {
	t.Helper()
	cache := tp.srv.Integrity().Cache()
	waitFor(t, host+" "+string(l), func() bool { return cache.Level(host) == l })
}

// reboot reboots the fleet node with a tampered hypervisor, or a good one,
// and has it say hello: the server attests it at once.
func (tp *trustpool) reboot(t testing.TB, host, hypervisor string) {
	t.Helper()
	for _, nd := range tp.fleet.Nodes() {
		if nd.Name == host {
			if err := tp.fleet.Reboot(nd, hypervisor); err != nil {
				t.Fatal(err)
			}
			if err := nd.Hello(context.Background()); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no fleet node %s", host)
}

// metrics scrapes the server's /metrics as the admin.
func (tp *trustpool) metrics(t testing.TB) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, tp.srv.URL()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tp.api.Token)
	resp, err := api.NewHTTPClient(tp.srv.CAPEM()).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s %v", resp.Status, err)
	}
	return b
}

// metricValue is the value of one series in the text format (-1 when
// it is not there).
func metricValue(t testing.TB, text []byte, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(string(text), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// writeFiles writes a certificate and its key as PEM files in dir.
func writeFiles(t testing.TB, dir, name string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	kb, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// gone reports whether a get failed because the object does not exist.
func gone(err error) bool { return apierrors.IsNotFound(err) }
