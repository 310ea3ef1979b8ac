package kube

import (
	"fmt"
	"log/slog"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// Client rates: client-go's defaults (5 a second, bursts of 10) would take
// an hour to write 10,000 Nodes (taints, then condition) after a policy
// change; at 200 a second it takes under two minutes. The API server's own
// priority and fairness protects it from us.
const (
	clientQPS   = 200
	clientBurst = 400
)

// NewClient connects to the API server named by the kubeconfig file at
// path, or, with path empty, by the in-cluster configuration of a pod (its
// service account's token and CA, KUBERNETES_SERVICE_HOST/PORT).
func NewClient(path string) (kubernetes.Interface, error) {
	var (
		rc  *rest.Config
		err error
	)
	if path == "" {
		if rc, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("kubernetes: in-cluster configuration (give a kubeconfig file outside a pod): %w", err)
		}
	} else {
		if rc, err = clientcmd.BuildConfigFromFlags("", path); err != nil {
			return nil, fmt.Errorf("kubernetes: kubeconfig %s: %w", path, err)
		}
	}
	rc.UserAgent = "trustpool"
	rc.QPS, rc.Burst = clientQPS, clientBurst
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client: %w", err)
	}
	return cs, nil
}

// LogTo sends client-go's own log lines (klog: leader election, watch
// errors) to log. klog is process-wide: the command calls this once, at
// start.
func LogTo(log *slog.Logger) { klog.SetSlogLogger(log) }
