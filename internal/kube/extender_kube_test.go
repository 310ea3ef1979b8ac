package kube_test

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"trustpool/internal/api"
	"trustpool/internal/fleetsim/fleet"
	"trustpool/internal/kube"
	"trustpool/internal/kube/kubetest"
	"trustpool/internal/server"
	"trustpool/internal/verdict"
)

// schedulerConfig is the part of the guide's KubeSchedulerConfiguration
// the test uses, decoded strictly: a key it does not know fails the test.
type schedulerConfig struct {
	APIVersion       string            `json:"apiVersion"`
	Kind             string            `json:"kind"`
	ClientConnection map[string]string `json:"clientConnection"`
	Extenders        []struct {
		URLPrefix        string `json:"urlPrefix"`
		FilterVerb       string `json:"filterVerb"`
		PrioritizeVerb   string `json:"prioritizeVerb"`
		Weight           int64  `json:"weight"`
		EnableHTTPS      bool   `json:"enableHTTPS"`
		NodeCacheCapable bool   `json:"nodeCacheCapable"`
		Ignorable        bool   `json:"ignorable"`
		TLSConfig        struct {
			CAFile, CertFile, KeyFile string
		} `json:"tlsConfig"`
	} `json:"extenders"`
}

// TestKubeExtender runs the real kube-scheduler with the guide's extender
// configuration (and its twin with whole Nodes) against `trustpool server`
// over HTTPS, kube-scheduler
// presenting a client certificate for system:kube-scheduler from a CA the
// server was given (--kube-extender-client-ca). No node controller runs:
// no Node is tainted or labelled, so only the extender keeps pods off the
// untrusted and the unknown nodes.
func TestKubeExtender(t *testing.T) {
	var sc schedulerConfig
	if err := yaml.UnmarshalStrict(doc(t, "scheduler-config.yaml"), &sc); err != nil {
		t.Fatalf("scheduler-config.yaml: %v", err)
	}
	if sc.Kind != "KubeSchedulerConfiguration" || len(sc.Extenders) != 1 {
		t.Fatalf("scheduler-config.yaml: %s with %d extenders", sc.Kind, len(sc.Extenders))
	}
	x := sc.Extenders[0]
	prefix, err := url.Parse(x.URLPrefix)
	if err != nil || prefix.Scheme != "https" || !x.EnableHTTPS || x.Ignorable || prefix.Path+"/"+x.FilterVerb != kube.FilterPath || prefix.Path+"/"+x.PrioritizeVerb != kube.PrioritizePath {
		t.Fatalf("scheduler-config.yaml: extender %+v does not name trustpool's routes over HTTPS, not ignorable", x)
	}

	dir := t.TempDir()
	ca := newTestCA(t, "cluster CA")
	certFile, keyFile := writeFiles(t, dir, "kube-scheduler", ca.issue(t, "system:kube-scheduler", x509.ExtKeyUsageClientAuth, time.Now().Add(-time.Minute)))
	tp := startTrustpool(t, 2, func(cfg *server.Config) { cfg.KubeClientCA = ca.pem })
	caFile := filepath.Join(dir, "trustpool-ca.pem")
	if err := os.WriteFile(caFile, tp.srv.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	good, bad := tp.fleet.Nodes()[0].Name, tp.fleet.Nodes()[1].Name
	tp.reboot(t, bad, fleet.Tampered)
	tp.waitLevel(t, bad, verdict.Untrusted)

	// The guide's extender, and the same with whole Nodes in the requests
	// (nodeCacheCapable: false): the scheduler calls both, so both forms
	// are decoded strictly from what the real scheduler sends.
	ext := kubetest.Extender{
		URLPrefix: tp.srv.URL() + prefix.Path, FilterVerb: x.FilterVerb, PrioritizeVerb: x.PrioritizeVerb, Weight: x.Weight,
		CAFile: caFile, CertFile: certFile, KeyFile: keyFile, NodeCacheCapable: x.NodeCacheCapable, Ignorable: x.Ignorable,
	}
	whole := ext
	whole.NodeCacheCapable = !x.NodeCacheCapable
	c := kubetest.Start(t, kubetest.Options{Scheduler: true, Extenders: []kubetest.Extender{ext, whole}})
	admin := client(t, c.Kubeconfig)
	for _, n := range []string{good, bad, "stranger.fleet.test"} {
		createNode(t, admin, n)
	}

	// Pods that ask nothing of trust: the extender alone sends them to the
	// one trusted node, though spreading would use all three.
	for i := range 6 {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("any-%d", i)},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}}
		createPod(t, admin, p)
		if node := boundTo(t, admin, p.Name); node != good {
			t.Errorf("pod %s bound to %s, want the trusted %s", p.Name, node, good)
		}
	}

	// The trusted node turns untrusted: a new pod fits nowhere, and the
	// scheduler says why, in the extender's words.
	tp.reboot(t, good, fleet.Tampered)
	tp.waitLevel(t, good, verdict.Untrusted)
	createPod(t, admin, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nowhere"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}}})
	if msg := unschedulable(t, admin, "nowhere"); !strings.Contains(msg, "trustpool") {
		t.Errorf("unschedulable pod: %q does not give trustpool's reasons", msg)
	}

	// Without the certificate or a token the extender refuses.
	resp, err := http.Post(tp.srv.URL()+kube.FilterPath, "application/json", strings.NewReader(`{"NodeNames":[]}`))
	if err == nil {
		resp.Body.Close()
		t.Errorf("a call without trusting the server's CA succeeded: %s", resp.Status)
	}
	hc := api.NewHTTPClient(tp.srv.CAPEM())
	resp, err = hc.Post(tp.srv.URL()+kube.FilterPath, "application/json", strings.NewReader(`{"NodeNames":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("extender without credentials: %s, want 401", resp.Status)
	}
	// A scheduler token works too (for callers other than kube-scheduler).
	tp.reboot(t, good, fleet.Hypervisor)
	tp.waitLevel(t, good, verdict.Trusted)
	var tok struct{ Token string }
	if err := tp.api.Do(t.Context(), "POST", "/v1/tokens", map[string]string{"name": "extender-test", "role": "scheduler"}, &tok); err != nil {
		t.Fatal(err)
	}
	sched := api.NewClient(tp.srv.URL(), tp.srv.CAPEM(), tok.Token)
	var res struct{ NodeNames []string }
	sched.AllowUnknownFields = true
	if err := sched.Do(t.Context(), "POST", kube.FilterPath, map[string][]string{"NodeNames": {good, bad}}, &res); err != nil || len(res.NodeNames) != 1 || res.NodeNames[0] != good {
		t.Errorf("filter with a scheduler token: %v %v, want [%s]", res.NodeNames, err, good)
	}
}
