package kube_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"trustpool/internal/kube"
	"trustpool/internal/verdict"
)

func post(t *testing.T, h http.Handler, body []byte) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, kube.FilterPath, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestExtenderFilter: filter passes exactly the trusted nodes, in both of
// kube-scheduler's forms, and says why it refused the others.
func TestExtenderFilter(t *testing.T) {
	now := time.Now()
	c := &kube.FakeVerdicts{}
	c.Set("good", verdict.Trusted, now, time.Hour)
	c.Set("bad", verdict.Untrusted, now, time.Hour)
	c.Set("stale", verdict.Trusted, now.Add(-2*time.Hour), time.Hour)
	e, err := kube.NewExtender(kube.ExtenderConfig{Verdicts: c})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"}}

	names := []string{"good", "bad", "stale", "never"}
	code, body := post(t, e.Filter(), mustJSON(t, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names}))
	var res extenderv1.ExtenderFilterResult
	if code != http.StatusOK || json.Unmarshal(body, &res) != nil {
		t.Fatalf("filter: %d %s", code, body)
	}
	if res.NodeNames == nil || strings.Join(*res.NodeNames, ",") != "good" || res.Nodes != nil {
		t.Errorf("filter NodeNames: %v (Nodes %v), want [good]", res.NodeNames, res.Nodes)
	}
	for _, n := range []string{"bad", "stale", "never"} {
		if !strings.Contains(res.FailedAndUnresolvableNodes[n], "trustpool") {
			t.Errorf("filter: no reason for %s: %v", n, res.FailedAndUnresolvableNodes)
		}
	}

	list := &corev1.NodeList{}
	for _, n := range names {
		list.Items = append(list.Items, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	code, body = post(t, e.Filter(), mustJSON(t, extenderv1.ExtenderArgs{Pod: pod, Nodes: list}))
	res = extenderv1.ExtenderFilterResult{}
	if code != http.StatusOK || json.Unmarshal(body, &res) != nil {
		t.Fatalf("filter: %d %s", code, body)
	}
	if res.Nodes == nil || len(res.Nodes.Items) != 1 || res.Nodes.Items[0].Name != "good" || res.NodeNames != nil {
		t.Errorf("filter Nodes: %+v (NodeNames %v), want [good]", res.Nodes, res.NodeNames)
	}

	code, body = post(t, e.Prioritize(), mustJSON(t, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names}))
	var prio extenderv1.HostPriorityList
	if code != http.StatusOK || json.Unmarshal(body, &prio) != nil {
		t.Fatalf("prioritize: %d %s", code, body)
	}
	want := extenderv1.HostPriorityList{{Host: "good", Score: 10}, {Host: "bad"}, {Host: "stale"}, {Host: "never"}}
	if len(prio) != len(want) {
		t.Fatalf("prioritize: %v, want %v", prio, want)
	}
	for i := range want {
		if prio[i] != want[i] {
			t.Errorf("prioritize: %v, want %v", prio, want)
		}
	}
}

// TestExtenderMapping: hosts named by a label; a host named by two nodes
// vouches for neither; names alone cannot be mapped without the
// controller's cache.
func TestExtenderMapping(t *testing.T) {
	c := &kube.FakeVerdicts{}
	c.Set("compute-1.example", verdict.Trusted, time.Now(), time.Hour)
	c.Set("compute-2.example", verdict.Trusted, time.Now(), time.Hour)
	const label = "node-restriction.kubernetes.io/trustpool-host"
	e, err := kube.NewExtender(kube.ExtenderConfig{Verdicts: c, Mapping: kube.Mapping{Label: label}})
	if err != nil {
		t.Fatal(err)
	}
	node := func(name, host string) corev1.Node {
		n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
		if host != "" {
			n.Labels[label] = host
		}
		return n
	}
	list := &corev1.NodeList{Items: []corev1.Node{node("a", "compute-1.example"), node("b", "compute-2.example"),
		node("c", "compute-2.example"), node("d", "")}}
	code, body := post(t, e.Filter(), mustJSON(t, extenderv1.ExtenderArgs{Nodes: list}))
	var res extenderv1.ExtenderFilterResult
	if code != http.StatusOK || json.Unmarshal(body, &res) != nil {
		t.Fatalf("filter: %d %s", code, body)
	}
	if len(res.Nodes.Items) != 1 || res.Nodes.Items[0].Name != "a" {
		t.Errorf("filter by label: %v, want [a]", res.Nodes.Items)
	}
	if !strings.Contains(res.FailedAndUnresolvableNodes["b"], "another node") || !strings.Contains(res.FailedAndUnresolvableNodes["d"], "names no trustpool host") {
		t.Errorf("reasons: %v", res.FailedAndUnresolvableNodes)
	}
	names := []string{"a"}
	code, body = post(t, e.Filter(), mustJSON(t, extenderv1.ExtenderArgs{NodeNames: &names}))
	res = extenderv1.ExtenderFilterResult{}
	if code != http.StatusOK || json.Unmarshal(body, &res) != nil || len(*res.NodeNames) != 0 || !strings.Contains(res.FailedAndUnresolvableNodes["a"], "nodeCacheCapable") {
		t.Errorf("names only, mapped by label, no controller: %d %s", code, body)
	}
}

// TestExtenderRefuses: what the extender cannot read strictly is a 4xx.
func TestExtenderRefuses(t *testing.T) {
	e, err := kube.NewExtender(kube.ExtenderConfig{Verdicts: &kube.FakeVerdicts{}})
	if err != nil {
		t.Fatal(err)
	}
	big := make([]string, kube.MaxExtenderNodes+1)
	for i := range big {
		big[i] = "n"
	}
	for _, tc := range []struct {
		name string
		body []byte
		code int
	}{
		{"unknown field", []byte(`{"NodeNames":["a"],"Extra":1}`), 400},
		{"unknown field in a node", []byte(`{"Nodes":{"items":[{"metadata":{"name":"a"},"bogus":true}]}}`), 400},
		{"trailing data", []byte(`{"NodeNames":["a"]} {}`), 400},
		{"both forms", []byte(`{"NodeNames":["a"],"Nodes":{"items":[]}}`), 400},
		{"neither form", []byte(`{"Pod":{}}`), 400},
		{"not JSON", []byte(`NodeNames=a`), 400},
		{"too many names", mustJSON(t, extenderv1.ExtenderArgs{NodeNames: &big}), 413},
		{"too large", append(append([]byte(`{"NodeNames":["`), bytes.Repeat([]byte("a"), kube.MaxExtenderBody)...), `"]}`...), 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, h := range []http.Handler{e.Filter(), e.Prioritize()} {
				if code, body := post(t, h, tc.body); code != tc.code {
					t.Errorf("%d %s, want %d", code, body, tc.code)
				}
			}
		})
	}
}

// testCA is a certificate authority for client certificates in tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a client certificate for cn with the given usages, valid
// from notBefore for a day.
func (ca *testCA) issue(t testing.TB, cn string, usage x509.ExtKeyUsage, notBefore time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, NotBefore: notBefore, NotAfter: notBefore.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestClientCerts: only a client certificate of the configured CA, for
// client authentication, current, naming an allowed user is admitted;
// everything else goes to the fallback.
func TestClientCerts(t *testing.T) {
	ca, other := newTestCA(t, "cluster CA"), newTestCA(t, "another CA")
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	cc := &kube.ClientCerts{Roots: pool, Names: []string{"system:kube-scheduler"}}
	now := time.Now().Add(-time.Minute)
	for _, tc := range []struct {
		name  string
		cert  *tls.Certificate
		admit bool
	}{
		{"the scheduler", ptr(ca.issue(t, "system:kube-scheduler", x509.ExtKeyUsageClientAuth, now)), true},
		{"another user", ptr(ca.issue(t, "system:node:n1", x509.ExtKeyUsageClientAuth, now)), false},
		{"another CA", ptr(other.issue(t, "system:kube-scheduler", x509.ExtKeyUsageClientAuth, now)), false},
		{"server usage only", ptr(ca.issue(t, "system:kube-scheduler", x509.ExtKeyUsageServerAuth, now)), false},
		{"expired", ptr(ca.issue(t, "system:kube-scheduler", x509.ExtKeyUsageClientAuth, now.Add(-48*time.Hour))), false},
		{"no certificate", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reached, fellBack bool
			h := cc.Or(func(http.Handler) http.Handler {
				return http.HandlerFunc(func(http.ResponseWriter, *http.Request) { fellBack = true })
			})(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
			req := httptest.NewRequest(http.MethodPost, kube.FilterPath, nil)
			req.TLS = &tls.ConnectionState{}
			if tc.cert != nil {
				req.TLS.PeerCertificates = []*x509.Certificate{tc.cert.Leaf}
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
			if reached != tc.admit || fellBack == tc.admit {
				t.Errorf("admitted %v, fell back %v; want admitted %v", reached, fellBack, tc.admit)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
