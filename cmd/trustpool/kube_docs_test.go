package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"trustpool/internal/config"
	"trustpool/internal/server"
)

// TestKubeDeploymentArgs: the arguments of the Deployment in
// docs/kubernetes/controller.yaml are a valid `trustpool server` command
// line that runs the node controller (outside a pod the test adds a
// kubeconfig file, which the in-cluster configuration would otherwise
// provide).
func TestKubeDeploymentArgs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "kubernetes", "controller.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		var obj struct {
			Kind string `json:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Args []string `json:"args"`
						} `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(d, &obj); err != nil {
			t.Fatal(err)
		}
		if obj.Kind == "Deployment" {
			args = obj.Spec.Template.Spec.Containers[0].Args
		}
	}
	if len(args) < 2 || args[0] != "server" {
		t.Fatalf("the Deployment runs %q, want trustpool server", args)
	}
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`{"apiVersion":"v1","kind":"Config","clusters":[{"name":"c","cluster":{"server":"https://127.0.0.1:6443"}}],
"users":[{"name":"u","user":{"token":"t"}}],"contexts":[{"name":"x","context":{"cluster":"c","user":"u"}}],"current-context":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var got server.Config
	var c config.Server
	cmd := serverCommand(func(_ *cobra.Command, cs config.Server, cfg server.Config) error { got, c = cfg, cs; return nil })
	cmd.SetArgs(append(args[1:], "--kubeconfig", kc))
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.Kube == nil || !c.Kubernetes || got.Kube.LeaseNamespace != "trustpool" || got.Listen != "0.0.0.0:8443" || got.StateDir != "/var/lib/trustpool" {
		t.Errorf("the Deployment's server: kube %+v, listen %s, state %s", got.Kube, got.Listen, got.StateDir)
	}
}
