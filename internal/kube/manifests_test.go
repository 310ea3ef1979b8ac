package kube_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"trustpool/internal/kube"
	"trustpool/internal/kube/kubetest"
	"trustpool/internal/verdict"
)

// TestKubeDocIncludesManifests: docs/kubernetes.md shows every file of
// docs/kubernetes/ verbatim, so what the operator reads is what the tests
// apply.
func TestKubeDocIncludesManifests(t *testing.T) {
	md, err := os.ReadFile(filepath.Join("..", "..", "docs", "kubernetes.md"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in docs/kubernetes: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(md, append(append([]byte("```yaml\n"), b...), "```"...)) {
			t.Errorf("docs/kubernetes.md does not show %s verbatim in a yaml block", filepath.Base(f))
		}
	}
}

// create creates a manifest's object as the admin.
func create(t *testing.T, cs kubernetes.Interface, obj runtime.Object) {
	t.Helper()
	ctx, o := context.Background(), metav1.CreateOptions{}
	var err error
	switch x := obj.(type) {
	case *corev1.Namespace:
		_, err = cs.CoreV1().Namespaces().Create(ctx, x, o)
	case *corev1.ServiceAccount:
		_, err = cs.CoreV1().ServiceAccounts(x.Namespace).Create(ctx, x, o)
	case *corev1.Service:
		_, err = cs.CoreV1().Services(x.Namespace).Create(ctx, x, o)
	case *corev1.PersistentVolumeClaim:
		_, err = cs.CoreV1().PersistentVolumeClaims(x.Namespace).Create(ctx, x, o)
	case *rbacv1.ClusterRole:
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, x, o)
	case *rbacv1.ClusterRoleBinding:
		_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, x, o)
	case *rbacv1.Role:
		_, err = cs.RbacV1().Roles(x.Namespace).Create(ctx, x, o)
	case *rbacv1.RoleBinding:
		_, err = cs.RbacV1().RoleBindings(x.Namespace).Create(ctx, x, o)
	case *appsv1.Deployment:
		_, err = cs.AppsV1().Deployments(x.Namespace).Create(ctx, x, o)
	case *admissionv1.ValidatingAdmissionPolicy:
		_, err = cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, x, o)
	case *admissionv1.ValidatingAdmissionPolicyBinding:
		_, err = cs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, x, o)
	default:
		t.Fatalf("the test does not know how to create a %T", obj)
	}
	if err != nil {
		t.Fatalf("create %T: %v", obj, err)
	}
}

// kubeletTaints are the taints the guide's KubeletConfiguration registers.
func kubeletTaints(t *testing.T) []corev1.Taint {
	var kc struct {
		APIVersion         string         `json:"apiVersion"`
		Kind               string         `json:"kind"`
		RegisterWithTaints []corev1.Taint `json:"registerWithTaints"`
	}
	if err := yaml.UnmarshalStrict(doc(t, "kubelet-config.yaml"), &kc); err != nil || kc.Kind != "KubeletConfiguration" {
		t.Fatalf("kubelet-config.yaml: %v (%s)", err, kc.Kind)
	}
	return kc.RegisterWithTaints
}

// tokenKubeconfig writes a kubeconfig that authenticates with token.
func tokenKubeconfig(t *testing.T, c *kubetest.Cluster, token string) string {
	t.Helper()
	kc := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "sa",
		"clusters": []any{map[string]any{"name": "c", "cluster": map[string]string{"server": c.Server, "certificate-authority": c.CAFile}}},
		"users":    []any{map[string]any{"name": "sa", "user": map[string]string{"token": token}}},
		"contexts": []any{map[string]any{"name": "sa", "context": map[string]string{"cluster": "c", "user": "sa"}}},
	}
	b, _ := json.Marshal(kc)
	f := filepath.Join(t.TempDir(), "sa.kubeconfig")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

const controllerUser = "system:serviceaccount:trustpool:trustpool"

// TestKubeManifests applies the guide's manifests to a real apiserver and
// runs the node controller as the guide's ServiceAccount, with a token the
// apiserver issued it: the RBAC rules are enough for the controller and no
// more than it needs; the admission policy refuses a Node registered
// without the taint, and lets nobody but the controller set the trusted
// label or lift the taint.
func TestKubeManifests(t *testing.T) {
	c := kubetest.Start(t, kubetest.Options{})
	admin := client(t, c.Kubeconfig)
	ctx := context.Background()
	for _, obj := range objects(t, doc(t, "controller.yaml")) {
		create(t, admin, obj)
	}

	// Least privilege, as the apiserver's authorizer decides it.
	for _, tc := range []struct {
		verb, resource, sub, ns, name, group string
		allowed                              bool
	}{
		{"get", "nodes", "", "", "", "", true},
		{"list", "nodes", "", "", "", "", true},
		{"watch", "nodes", "", "", "", "", true},
		{"patch", "nodes", "", "", "", "", true},
		{"patch", "nodes", "status", "", "", "", true},
		{"create", "leases", "", "trustpool", "", "coordination.k8s.io", true},
		{"get", "leases", "", "trustpool", kube.DefaultLeaseName, "coordination.k8s.io", true},
		{"update", "leases", "", "trustpool", kube.DefaultLeaseName, "coordination.k8s.io", true},
		{"update", "nodes", "", "", "", "", false},
		{"delete", "nodes", "", "", "", "", false},
		{"create", "nodes", "", "", "", "", false},
		{"update", "nodes", "status", "", "", "", false},
		{"get", "leases", "", "trustpool", "another-lease", "coordination.k8s.io", false},
		{"delete", "leases", "", "trustpool", kube.DefaultLeaseName, "coordination.k8s.io", false},
		{"create", "leases", "", "kube-system", "", "coordination.k8s.io", false},
		{"list", "pods", "", "", "", "", false},
		{"create", "pods", "eviction", "default", "", "", false},
		{"get", "secrets", "", "trustpool", "", "", false},
	} {
		sar, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: controllerUser, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:trustpool", "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: tc.verb, Resource: tc.resource, Subresource: tc.sub,
				Namespace: tc.ns, Name: tc.name, Group: tc.group}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != tc.allowed {
			t.Errorf("%s %s/%s %s/%s: allowed %v, want %v", tc.verb, tc.resource, tc.sub, tc.ns, tc.name, sar.Status.Allowed, tc.allowed)
		}
	}

	for _, obj := range objects(t, doc(t, "admission.yaml")) {
		create(t, admin, obj)
	}
	// The policy is in force once the apiserver has loaded it: until then
	// a bare Node may get through (and is deleted again).
	var refusal error
	waitFor(t, "the admission policy to refuse a Node without the taint", func() bool {
		_, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bare"}}, metav1.CreateOptions{})
		if err == nil {
			admin.CoreV1().Nodes().Delete(ctx, "bare", metav1.DeleteOptions{})
			return false
		}
		refusal = err
		return true
	})
	if !strings.Contains(refusal.Error(), "must register with the taint trustpool.io/untrusted:NoSchedule") {
		t.Errorf("a Node without the taint: %v", refusal)
	}
	taints := kubeletTaints(t)
	for _, n := range []string{"good", "bad"} {
		createNode(t, admin, n, taints...)
	}

	// The controller, as the ServiceAccount, with a token the apiserver
	// issued for it.
	tr, err := admin.CoreV1().ServiceAccounts("trustpool").CreateToken(ctx, "trustpool",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sa := client(t, tokenKubeconfig(t, c, tr.Status.Token))
	v := &kube.FakeVerdicts{}
	v.Set("good", verdict.Trusted, time.Now(), time.Hour)
	v.Set("bad", verdict.Untrusted, time.Now(), time.Hour)
	var apiErrors atomic.Int64
	ctl, err := kube.New(kube.Config{Client: sa, Verdicts: v, Identity: "replica-1", Log: testLog(t),
		APIError: func(string) { apiErrors.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ctl.Run(cctx) }()
	defer func() { stop(); <-done }()
	waitNode(t, admin, "good", "trusted with its condition, written by the ServiceAccount", func(n *corev1.Node) bool {
		c := condition(n)
		return trusted(n) && c != nil && c.Status == corev1.ConditionTrue
	})
	waitNode(t, admin, "bad", "untrusted with its condition", func(n *corev1.Node) bool {
		c := condition(n)
		return untrusted(n) && c != nil && c.Status == corev1.ConditionFalse
	})
	lease, err := admin.CoordinationV1().Leases("trustpool").Get(ctx, kube.DefaultLeaseName, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != "replica-1" {
		t.Errorf("lease: %+v, %v", lease, err)
	}

	// Nobody else may put the label on, take it off, or lift the taint:
	// neither an administrator nor a kubelet allowed to patch Nodes.
	kubelet := client(t, c.KubeconfigFor("system:node:bad", "system:nodes"))
	create(t, admin, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "test-node-writer"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "patch"}}}})
	create(t, admin, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "test-node-writer"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "test-node-writer"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "system:node:bad"}}})
	for _, tc := range []struct {
		who   string
		cs    kubernetes.Interface
		node  string
		patch string
		want  string
	}{
		{"a kubelet", kubelet, "bad", fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, kube.TrustedLabel), "only trustpool's node controller may set"},
		{"a kubelet", kubelet, "bad", `{"spec":{"taints":[]}}`, "only trustpool's node controller may remove the taint"},
		{"an administrator", admin, "bad", fmt.Sprintf(`{"metadata":{"labels":{%q:"true"}}}`, kube.TrustedLabel), "only trustpool's node controller may set"},
		{"an administrator", admin, "good", fmt.Sprintf(`{"metadata":{"labels":{%q:null}}}`, kube.TrustedLabel), "only trustpool's node controller may set"},
	} {
		var err error
		waitFor(t, "the RBAC binding", func() bool {
			_, err = tc.cs.CoreV1().Nodes().Patch(ctx, tc.node, types.StrategicMergePatchType, []byte(tc.patch), metav1.PatchOptions{})
			return err == nil || !strings.Contains(err.Error(), "cannot patch resource")
		})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s patches %s with %s: %v, want refused (%s)", tc.who, tc.node, tc.patch, err, tc.want)
		}
	}
	if !untrusted(getNode(t, admin, "bad")) || !trusted(getNode(t, admin, "good")) {
		t.Error("a refused patch changed a node")
	}

	// A new Node registered as the guide's kubelets do passes the policy
	// and is tainted from the start; the controller keeps it so.
	createNode(t, admin, "late", taints...)
	waitNode(t, admin, "late", "untrusted with its condition (no verdict)", func(n *corev1.Node) bool {
		c := condition(n)
		return untrusted(n) && c != nil && c.Reason == "NotAttested"
	})
	if n := apiErrors.Load(); n > 0 {
		t.Errorf("%d of the controller's API calls failed (forbidden by RBAC or the policy?)", n)
	}
}
