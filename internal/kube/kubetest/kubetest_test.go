package kubetest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// idleWindow is how long a Node without a kubelet is watched for taints.
// Start runs the controller-manager with node-monitor and node-startup
// grace periods of 3 s, so a node-lifecycle controller would taint it well
// inside the window (TestNodeLifecycleTaintsIdleNodes shows it does).
const idleWindow = 20 * time.Second

// TestSchedulerBindsPod: the real scheduler binds a pod to a Node object
// that has no kubelet, honouring the pod's nodeSelector and an HTTPS
// extender (verified server, client certificate) that filters a node out
// and prefers another.
func TestSchedulerBindsPod(t *testing.T) {
	dir := t.TempDir()
	clientCA, err := newAuthority()
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey := filepath.Join(dir, "ext-client.crt"), filepath.Join(dir, "ext-client.key")
	if err := clientCA.issue(clientCert, clientKey, "kube-scheduler", nil, false); err != nil {
		t.Fatal(err)
	}

	var filtered, prioritized atomic.Int32
	ext := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var args struct {
			Pod struct {
				Metadata struct{ Name string } `json:"metadata"`
			}
			NodeNames *[]string
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&args); err != nil || args.NodeNames == nil {
			http.Error(w, fmt.Sprintf("want ExtenderArgs with NodeNames: %v", err), http.StatusBadRequest)
			return
		}
		switch r.URL.Path {
		case "/ext/filter":
			filtered.Add(1)
			keep := slices.DeleteFunc(slices.Clone(*args.NodeNames), func(n string) bool { return n == "kubetest-c" })
			json.NewEncoder(w).Encode(map[string]any{"NodeNames": keep, "FailedNodes": map[string]string{"kubetest-c": "not trusted"}})
		case "/ext/prioritize":
			prioritized.Add(1)
			var list []map[string]any
			for _, n := range *args.NodeNames {
				score := 0
				if n == "kubetest-a" {
					score = 10
				}
				list = append(list, map[string]any{"Host": n, "Score": score})
			}
			json.NewEncoder(w).Encode(list)
		default:
			http.NotFound(w, r)
		}
	}))
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	ext.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	ext.StartTLS()
	t.Cleanup(ext.Close)
	extCA := filepath.Join(dir, "ext-ca.crt")
	if err := os.WriteFile(extCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ext.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	c := Start(t, Options{Scheduler: true, Extenders: []Extender{{
		URLPrefix: ext.URL + "/ext", FilterVerb: "filter", PrioritizeVerb: "prioritize", Weight: 5,
		CAFile: extCA, CertFile: clientCert, KeyFile: clientKey, NodeCacheCapable: true,
	}}})
	a := newAPI(t, c)
	a.createNode("kubetest-a", map[string]string{"disk": "ssd"})
	a.createNode("kubetest-b", map[string]string{"disk": "hdd"})
	a.createNode("kubetest-c", map[string]string{"disk": "ssd"})
	a.createNode("kubetest-d", map[string]string{"disk": "ssd"})
	a.createPod("web", "", map[string]string{"disk": "ssd"})

	// The nodes are alike, so the extender's priority (10 for a, 0 for d,
	// times the weight) decides between the two that pass the filters.
	pod := a.waitPod("web", func(p pod) bool { return p.Spec.NodeName != "" })
	if pod.Spec.NodeName != "kubetest-a" {
		t.Fatalf("web bound to %q, want kubetest-a (kubetest-b fails the nodeSelector, the extender filters kubetest-c and prefers kubetest-a to kubetest-d)", pod.Spec.NodeName)
	}
	if filtered.Load() == 0 || prioritized.Load() == 0 {
		t.Errorf("extender calls: filter %d, prioritize %d; want both", filtered.Load(), prioritized.Load())
	}
}

// TestTaintEviction: the controller-manager leaves a Node without a kubelet
// and its pod alone, and a NoExecute taint added by hand evicts the pod.
func TestTaintEviction(t *testing.T) {
	c := Start(t, Options{ControllerManager: true})
	a := newAPI(t, c)
	a.createNode("kubetest-a", nil)
	a.createPod("victim", "kubetest-a", nil)

	for deadline := time.Now().Add(idleWindow); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if n := a.getNode("kubetest-a"); len(n.Spec.Taints) > 0 {
			t.Fatalf("an idle Node was tainted on its own: %+v", n.Spec.Taints)
		}
		if p := a.getPod("victim"); p.Metadata.DeletionTimestamp != "" {
			t.Fatalf("a pod on an untainted Node was deleted at %s", p.Metadata.DeletionTimestamp)
		}
	}

	a.do(http.MethodPatch, "/api/v1/nodes/kubetest-a", "application/merge-patch+json",
		map[string]any{"spec": map[string]any{"taints": []taint{{Key: "trustpool.io/untrusted", Effect: "NoExecute"}}}}, nil)
	p := a.waitPod("victim", func(p pod) bool { return p.Metadata.DeletionTimestamp != "" })
	if !slices.ContainsFunc(p.Status.Conditions, func(c condition) bool {
		return c.Type == "DisruptionTarget" && c.Status == "True" && c.Reason == "DeletionByTaintManager"
	}) {
		t.Errorf("evicted pod's conditions %+v: want DisruptionTarget by DeletionByTaintManager", p.Status.Conditions)
	}
}

// TestNodeLifecycleTaintsIdleNodes shows that TestTaintEviction's window is
// long enough: with the node-lifecycle controller, which Start leaves out,
// an idle Node is tainted inside it.
func TestNodeLifecycleTaintsIdleNodes(t *testing.T) {
	c := Start(t, Options{ControllerManager: true, controllers: []string{"node-lifecycle-controller", "taint-eviction-controller"}})
	a := newAPI(t, c)
	a.createNode("kubetest-a", nil)
	start := time.Now()
	for len(a.getNode("kubetest-a").Spec.Taints) == 0 {
		if time.Since(start) > idleWindow {
			t.Fatalf("node-lifecycle-controller did not taint an idle Node within %v", idleWindow)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("tainted after %v: %+v", time.Since(start).Round(100*time.Millisecond), a.getNode("kubetest-a").Spec.Taints)
}

// TestKubeconfigFor: a user made after Start authenticates with the
// kubeconfig's client certificate, as that user in those groups.
func TestKubeconfigFor(t *testing.T) {
	c := Start(t, Options{})
	a := newAPI(t, c)
	kc := c.KubeconfigFor("alice", "kubetest:readers")

	var cfg struct {
		Clusters []struct {
			Cluster struct {
				Server string `json:"server"`
				CA     string `json:"certificate-authority"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			User struct {
				Cert string `json:"client-certificate"`
				Key  string `json:"client-key"`
			} `json:"user"`
		} `json:"users"`
	}
	b, err := os.ReadFile(kc)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil || len(cfg.Clusters) != 1 || len(cfg.Users) != 1 {
		t.Fatalf("kubeconfig %s: %v\n%s", kc, err, b)
	}
	cert, err := tls.LoadX509KeyPair(cfg.Users[0].User.Cert, cfg.Users[0].User.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(cfg.Clusters[0].Cluster.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	alice := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}}}
	t.Cleanup(alice.CloseIdleConnections)
	listNodes := func() (int, string) {
		resp, err := alice.Get(cfg.Clusters[0].Cluster.Server + "/api/v1/nodes")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, string(body)
	}

	if code, body := listNodes(); code != http.StatusForbidden || !strings.Contains(body, `User \"alice\"`) {
		t.Fatalf("alice lists nodes before any grant: %d %s; want 403 naming alice", code, body)
	}
	a.do(http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/clusterroles", "", map[string]any{
		"metadata": map[string]any{"name": "kubetest-node-reader"},
		"rules":    []any{map[string]any{"apiGroups": []string{""}, "resources": []string{"nodes"}, "verbs": []string{"list"}}},
	}, nil)
	a.do(http.MethodPost, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", "", map[string]any{
		"metadata": map[string]any{"name": "kubetest-readers"},
		"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubetest-node-reader"},
		"subjects": []any{map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubetest:readers"}},
	}, nil)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		code, body := listNodes()
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alice, in kubetest:readers, lists nodes after the grant: %d %s", code, body)
		}
	}
}

// TestMissingBinaries: without the binaries a test skips, or fails under
// CI=true, saying how to build them.
func TestMissingBinaries(t *testing.T) {
	t.Setenv("TRUSTPOOL_KUBE_BIN", t.TempDir())
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			r := &recorder{TB: t}
			done := make(chan struct{})
			go func() { // Skip and Fatal end the goroutine
				defer close(done)
				Start(r, Options{})
			}()
			<-done
			want := "skipped"
			if ci == "true" {
				want = "failed"
			}
			if r.ended != want || !strings.Contains(r.msg, "make kube") {
				t.Errorf("Start %s (%q), want %s with a hint to run make kube", r.ended, r.msg, want)
			}
		})
	}
}

// recorder is a testing.TB whose Fatal and Skip record instead of ending
// the test.
type recorder struct {
	testing.TB
	ended, msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatal(args ...any) {
	r.ended, r.msg = "failed", fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) { r.Fatal(fmt.Sprintf(format, args...)) }
func (r *recorder) Skip(args ...any) {
	r.ended, r.msg = "skipped", fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Skipf(format string, args ...any) { r.Skip(fmt.Sprintf(format, args...)) }

// api is the admin's plain-HTTP client for the apiserver.
type api struct {
	t      *testing.T
	c      *Cluster
	client *http.Client
}

func newAPI(t *testing.T, c *Cluster) *api {
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("no certificate in %s", c.CAFile)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	t.Cleanup(client.CloseIdleConnections)
	return &api{t: t, c: c, client: client}
}

// do sends body as JSON and decodes a 2xx response into out.
func (a *api) do(method, path, contentType string, body, out any) {
	a.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		a.t.Fatal(err)
	}
	if body == nil {
		b = nil
	}
	req, err := http.NewRequest(method, a.c.Server+path, bytes.NewReader(b))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.c.Token)
	if contentType == "" {
		contentType = "application/json"
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		a.t.Fatalf("%s %s: %s: %s", method, path, resp.Status, rb)
	}
	if out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			a.t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

type taint struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Effect string `json:"effect"`
}

type condition struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

type node struct {
	Spec struct {
		Taints []taint `json:"taints"`
	} `json:"spec"`
}

type pod struct {
	Metadata struct {
		DeletionTimestamp string `json:"deletionTimestamp"`
	} `json:"metadata"`
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Conditions []condition `json:"conditions"`
	} `json:"status"`
}

// createNode creates a Node as a kubelet would register it: capacity and
// a Ready condition, so that the scheduler can bind to it.
func (a *api) createNode(name string, labels map[string]string) {
	a.t.Helper()
	res := map[string]string{"cpu": "4", "memory": "8Gi", "pods": "110"}
	now := time.Now().UTC().Format(time.RFC3339)
	a.do(http.MethodPost, "/api/v1/nodes", "", map[string]any{
		"metadata": map[string]any{"name": name, "labels": labels},
		"status": map[string]any{
			"capacity": res, "allocatable": res,
			"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "KubeletReady",
				"lastHeartbeatTime": now, "lastTransitionTime": now}},
		},
	}, nil)
}

// createPod creates a pod in default, bound to nodeName when set, else
// left to the scheduler with nodeSelector.
func (a *api) createPod(name, nodeName string, nodeSelector map[string]string) {
	a.t.Helper()
	spec := map[string]any{"containers": []any{map[string]any{"name": "c", "image": "registry.invalid/none"}}}
	if nodeName != "" {
		spec["nodeName"] = nodeName
	}
	if nodeSelector != nil {
		spec["nodeSelector"] = nodeSelector
	}
	a.do(http.MethodPost, "/api/v1/namespaces/default/pods", "", map[string]any{"metadata": map[string]any{"name": name}, "spec": spec}, nil)
}

func (a *api) getNode(name string) (n node) {
	a.t.Helper()
	a.do(http.MethodGet, "/api/v1/nodes/"+name, "", nil, &n)
	return n
}

func (a *api) getPod(name string) (p pod) {
	a.t.Helper()
	a.do(http.MethodGet, "/api/v1/namespaces/default/pods/"+name, "", nil, &p)
	return p
}

// waitPod polls the pod until ok, for at most a minute.
func (a *api) waitPod(name string, ok func(pod) bool) pod {
	a.t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		p := a.getPod(name)
		if ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("pod %s: still %+v after a minute", name, p)
		}
	}
}
