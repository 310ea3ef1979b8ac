// Package kubetest is test equipment: a real Kubernetes control plane —
// etcd, kube-apiserver and, when asked, kube-scheduler and
// kube-controller-manager — started by a test on 127.0.0.1 with free ports
// in a t.TempDir(), and stopped (process-group kill) when the test ends. On
// failure the components' logs go to the test log.
//
// The binaries are built from the module sources of k8s.io/kubernetes and
// go.etcd.io/etcd by `make kube` (test/kube/build.sh) into bin/kube, or are
// found in $TRUSTPOOL_KUBE_BIN. Without them the test is skipped, unless
// CI=true, where it fails.
//
// The package speaks plain HTTP and JSON: it links no client-go, so the
// client the code under test uses is its own choice.
//
// What a plane without kubelets needs, and how this one differs from a
// production cluster:
//
//   - Nodes are Node objects created through the API. Give them
//     status.capacity and status.allocatable (cpu, memory, pods) and a Ready
//     condition; the scheduler binds pods to them.
//   - The admission plugins TaintNodesByCondition and ServiceAccount are
//     off. The first taints every new Node node.kubernetes.io/not-ready
//     until the node-lifecycle controller sees a kubelet, which never
//     comes; the second refuses pods until the serviceaccount controller has
//     made each namespace's default ServiceAccount, and mounts tokens for
//     kubelets.
//   - kube-controller-manager runs only the taint-eviction-controller
//     (NoExecute taints delete the pods that do not tolerate them), with its
//     own ServiceAccount credentials (kube-system/node-controller, as
//     upstream), and the daemonset-controller, without which upstream's
//     taint-eviction-controller cannot find a tainted Node's pods (it acts
//     on DaemonSets only: a test that makes one gets its pods). The
//     node-lifecycle controller, which would also do, is left out: it would
//     mark every Node without a kubelet unreachable and taint it.
//   - A deleted pod bound to a Node stays Terminating (deletionTimestamp set)
//     with no kubelet to confirm it: an eviction is seen as a
//     deletionTimestamp and a DisruptionTarget condition, not as a 404.
//   - Leader election is off in the scheduler and controller-manager.
//
// Identities: the admin (Cluster.Token, Cluster.Kubeconfig) is in
// system:masters; the scheduler is the user system:kube-scheduler and the
// controller-manager system:kube-controller-manager, with the roles the
// apiserver bootstraps for them. KubeconfigFor makes any other user, for
// tests under least-privilege RBAC.
package kubetest

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options say which components to start besides etcd and the apiserver.
type Options struct {
	Scheduler         bool       // start kube-scheduler
	ControllerManager bool       // start kube-controller-manager, with only the controllers eviction needs
	Extenders         []Extender // scheduler extenders, rendered into its KubeSchedulerConfiguration

	// controllers replaces the controller-manager's --controllers, for this
	// package's own test that the default list does not taint idle Nodes.
	controllers []string
}

// Extender is one entry of the scheduler's extenders list
// (KubeSchedulerConfiguration, kubescheduler.config.k8s.io/v1). The
// scheduler calls URLPrefix + "/" + verb.
//
// An https URLPrefix must come with a CAFile: the scheduler skips
// verification of an HTTPS extender that has no CA configured, so Start
// refuses one rather than test an unverified connection.
type Extender struct {
	URLPrefix, FilterVerb, PrioritizeVerb string
	Weight                                int64
	CAFile, CertFile, KeyFile             string // TLS to the extender (client cert optional)
	NodeCacheCapable, Ignorable           bool
}

// Cluster is a running control plane.
type Cluster struct {
	Kubeconfig string // admin kubeconfig file (system:masters)
	Server     string // https://127.0.0.1:port
	CAFile     string // the apiserver's serving CA
	Token      string // admin bearer token
	Dir        string

	tb    testing.TB
	ca    *authority
	mu    sync.Mutex // guards users
	users int        // kubeconfigs written by KubeconfigFor, to name their files
}

// Bins are the programs Start runs, in the directory binDir finds.
var bins = []string{"etcd", "kube-apiserver", "kube-scheduler", "kube-controller-manager"}

// readyTimeout bounds each component's start: the apiserver takes a few
// seconds here, more while the rest of the test suite loads the machine.
const readyTimeout = 2 * time.Minute

// Start starts a control plane and stops it when tb ends.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	bin := binDir(tb)
	for _, e := range opts.Extenders {
		if strings.HasPrefix(e.URLPrefix, "https://") && e.CAFile == "" {
			tb.Fatalf("kubetest: extender %s: an https extender needs a CAFile (the scheduler would not verify it)", e.URLPrefix)
		}
	}

	dir := tb.TempDir()
	c := &Cluster{Dir: dir, tb: tb, CAFile: filepath.Join(dir, "ca.crt")}
	var procs []*proc
	tb.Cleanup(func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop(10 * time.Second)
		}
		if tb.Failed() {
			for _, p := range procs {
				tb.Logf("kubetest: %s log (%s):\n%s", p.name, p.exitState(), p.tail(32<<10))
			}
		}
	})
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatalf("kubetest: %v", err)
		}
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	must(os.Mkdir(path("logs"), 0o700))

	ca, err := newAuthority()
	must(err)
	c.ca = ca
	must(writePEM(c.CAFile, "CERTIFICATE", ca.cert.Raw))
	must(writeKeyPair(path("sa.key"), path("sa.pub")))
	serving := func(name string, hosts ...string) (string, string) {
		cert, key := path(name+".crt"), path(name+".key")
		must(ca.issue(cert, key, name, nil, true, hosts...))
		return cert, key
	}
	apiCert, apiKey := serving("kube-apiserver", "127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "10.96.0.1")

	// Static tokens for the identities known now; the apiserver reads the
	// file once, so later users get client certificates (KubeconfigFor).
	c.Token = token()
	schedToken, kcmToken := token(), token()
	tokens := fmt.Sprintf("%s,kubetest-admin,kubetest-admin,system:masters\n", c.Token) +
		fmt.Sprintf("%s,system:kube-scheduler,system:kube-scheduler\n", schedToken) +
		fmt.Sprintf("%s,system:kube-controller-manager,system:kube-controller-manager\n", kcmToken)
	must(os.WriteFile(path("tokens.csv"), []byte(tokens), 0o600))

	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	tb.Cleanup(client.CloseIdleConnections)

	// etcd.
	var etcdURL string
	procs = append(procs, launch(tb, "etcd", func() (*proc, func() error, error) {
		clientPort, peerPort := freePort(tb), freePort(tb)
		etcdURL = "http://127.0.0.1:" + clientPort
		peerURL := "http://127.0.0.1:" + peerPort
		p, err := startProc("etcd", filepath.Join(bin, "etcd"), path("logs/etcd.log"),
			"--name", "kubetest", "--data-dir", path("etcd"),
			"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "kubetest="+peerURL,
			"--unsafe-no-fsync") // the data lives for one test
		return p, func() error { return probe(client, etcdURL+"/health", "", `"health":"true"`) }, err
	}))

	// kube-apiserver.
	procs = append(procs, launch(tb, "kube-apiserver", func() (*proc, func() error, error) {
		port := freePort(tb)
		c.Server = "https://127.0.0.1:" + port
		p, err := startProc("kube-apiserver", filepath.Join(bin, "kube-apiserver"), path("logs/kube-apiserver.log"),
			"--etcd-servers", etcdURL,
			"--bind-address", "127.0.0.1", "--secure-port", port, "--advertise-address", "127.0.0.1",
			"--cert-dir", path("kube-apiserver-certs"), "--tls-cert-file", apiCert, "--tls-private-key-file", apiKey,
			"--client-ca-file", c.CAFile, "--token-auth-file", path("tokens.csv"),
			"--service-account-key-file", path("sa.pub"), "--service-account-signing-key-file", path("sa.key"),
			"--service-account-issuer", "https://kubernetes.default.svc",
			"--authorization-mode", "RBAC",
			"--service-cluster-ip-range", "10.96.0.0/24",
			"--endpoint-reconciler-type", "none", // on loopback the endpoints reconciler fails
			"--disable-admission-plugins", "TaintNodesByCondition,ServiceAccount",
			"--profiling=false")
		return p, func() error {
			// Ready, and the namespaces the bootstrap controller makes exist.
			for _, u := range []string{"/readyz", "/api/v1/namespaces/default", "/api/v1/namespaces/kube-system"} {
				if err := probe(client, c.Server+u, c.Token, ""); err != nil {
					return err
				}
			}
			return nil
		}, err
	}))
	c.Kubeconfig = path("admin.kubeconfig")
	must(c.writeKubeconfig(c.Kubeconfig, "kubetest-admin", map[string]string{"token": c.Token}))

	if opts.Scheduler {
		kc := path("kube-scheduler.kubeconfig")
		must(c.writeKubeconfig(kc, "system:kube-scheduler", map[string]string{"token": schedToken}))
		cfg := path("kube-scheduler.json")
		must(writeSchedulerConfig(cfg, kc, opts.Extenders))
		cert, key := serving("kube-scheduler", "127.0.0.1")
		procs = append(procs, launch(tb, "kube-scheduler", func() (*proc, func() error, error) {
			port := freePort(tb)
			p, err := startProc("kube-scheduler", filepath.Join(bin, "kube-scheduler"), path("logs/kube-scheduler.log"),
				"--config", cfg,
				"--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
				"--bind-address", "127.0.0.1", "--secure-port", port,
				"--tls-cert-file", cert, "--tls-private-key-file", key,
				"--v", "2") // logs each binding
			return p, func() error { return probe(client, "https://127.0.0.1:"+port+"/readyz", "", "") }, err
		}))
	}

	if opts.ControllerManager {
		kc := path("kube-controller-manager.kubeconfig")
		must(c.writeKubeconfig(kc, "system:kube-controller-manager", map[string]string{"token": kcmToken}))
		cert, key := serving("kube-controller-manager", "127.0.0.1")
		controllers := opts.controllers
		if controllers == nil {
			// taint-eviction-controller finds a tainted Node's pods through an
			// informer index ("spec.nodeName") that it does not add itself:
			// node-lifecycle-controller or daemonset-controller adds it. Without
			// one of them a NoExecute taint evicts nothing ("Index with name
			// spec.nodeName does not exist", v1.37.2). The daemonset controller
			// acts only on DaemonSets, which these tests do not make.
			controllers = []string{"taint-eviction-controller", "daemonset-controller"}
		}
		procs = append(procs, launch(tb, "kube-controller-manager", func() (*proc, func() error, error) {
			port := freePort(tb)
			p, err := startProc("kube-controller-manager", filepath.Join(bin, "kube-controller-manager"), path("logs/kube-controller-manager.log"),
				"--kubeconfig", kc,
				"--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc,
				"--controllers", strings.Join(controllers, ","),
				"--use-service-account-credentials",
				"--leader-elect=false",
				"--bind-address", "127.0.0.1", "--secure-port", port,
				"--tls-cert-file", cert, "--tls-private-key-file", key,
				// Were the node-lifecycle controller running, it would act on
				// an idle Node within seconds rather than a minute: the test
				// that it does not run need not wait long.
				"--node-monitor-period", "1s", "--node-monitor-grace-period", "3s", "--node-startup-grace-period", "3s",
				"--v", "2")
			return p, func() error { return probe(client, "https://127.0.0.1:"+port+"/healthz", "", "") }, err
		}))
	}
	return c
}

// KubeconfigFor writes a kubeconfig for user in groups and returns its
// path, for running code under test with only the RBAC a test grants.
// The user authenticates with a client certificate from the cluster's CA
// (CN user, O groups), not a token: the apiserver reads its token file
// once, at start, and a certificate can be made at any time.
func (c *Cluster) KubeconfigFor(user string, groups ...string) string {
	c.tb.Helper()
	c.mu.Lock()
	c.users++
	n := c.users
	c.mu.Unlock()
	base := filepath.Join(c.Dir, fmt.Sprintf("user%d-%s", n, fileSafe.ReplaceAllString(user, "_")))
	cert, key := base+".crt", base+".key"
	if err := c.ca.issue(cert, key, user, groups, false); err != nil {
		c.tb.Fatalf("kubetest: client certificate for %s: %v", user, err)
	}
	kc := base + ".kubeconfig"
	if err := c.writeKubeconfig(kc, user, map[string]string{"client-certificate": cert, "client-key": key}); err != nil {
		c.tb.Fatalf("kubetest: %v", err)
	}
	return kc
}

var fileSafe = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// writeKubeconfig writes a kubeconfig (JSON, which is YAML) for the
// apiserver with the credentials cred (a kubeconfig "user" stanza).
func (c *Cluster) writeKubeconfig(file, user string, cred map[string]string) error {
	kc := map[string]any{
		"apiVersion": "v1",
		"kind":       "Config",
		"clusters": []any{map[string]any{"name": "kubetest", "cluster": map[string]string{
			"server": c.Server, "certificate-authority": c.CAFile}}},
		"users":           []any{map[string]any{"name": user, "user": cred}},
		"contexts":        []any{map[string]any{"name": "kubetest", "context": map[string]string{"cluster": "kubetest", "user": user}}},
		"current-context": "kubetest",
	}
	b, err := json.MarshalIndent(kc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

// writeSchedulerConfig renders the scheduler's KubeSchedulerConfiguration
// (JSON, which the scheduler decodes strictly).
func writeSchedulerConfig(file, kubeconfig string, extenders []Extender) error {
	type tlsConfig struct {
		CAFile   string `json:"caFile,omitempty"`
		CertFile string `json:"certFile,omitempty"`
		KeyFile  string `json:"keyFile,omitempty"`
	}
	type extender struct {
		URLPrefix        string     `json:"urlPrefix"`
		FilterVerb       string     `json:"filterVerb,omitempty"`
		PrioritizeVerb   string     `json:"prioritizeVerb,omitempty"`
		Weight           int64      `json:"weight,omitempty"`
		EnableHTTPS      bool       `json:"enableHTTPS,omitempty"`
		TLSConfig        *tlsConfig `json:"tlsConfig,omitempty"`
		NodeCacheCapable bool       `json:"nodeCacheCapable,omitempty"`
		Ignorable        bool       `json:"ignorable,omitempty"`
	}
	cfg := struct {
		APIVersion       string            `json:"apiVersion"`
		Kind             string            `json:"kind"`
		ClientConnection map[string]string `json:"clientConnection"`
		LeaderElection   map[string]bool   `json:"leaderElection"`
		Extenders        []extender        `json:"extenders,omitempty"`
	}{
		APIVersion:       "kubescheduler.config.k8s.io/v1",
		Kind:             "KubeSchedulerConfiguration",
		ClientConnection: map[string]string{"kubeconfig": kubeconfig},
		LeaderElection:   map[string]bool{"leaderElect": false},
	}
	for _, e := range extenders {
		x := extender{
			URLPrefix: e.URLPrefix, FilterVerb: e.FilterVerb, PrioritizeVerb: e.PrioritizeVerb, Weight: e.Weight,
			EnableHTTPS:      strings.HasPrefix(e.URLPrefix, "https://"),
			NodeCacheCapable: e.NodeCacheCapable, Ignorable: e.Ignorable,
		}
		if e.CAFile != "" || e.CertFile != "" || e.KeyFile != "" {
			x.TLSConfig = &tlsConfig{CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile}
		}
		cfg.Extenders = append(cfg.Extenders, x)
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o600)
}

// launch starts a component and waits until ready reports nil. The free
// ports are chosen by closing a listener, so another process may take one
// first: a component that exits saying so is started again on new ports.
func launch(tb testing.TB, name string, start func() (*proc, func() error, error)) *proc {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		p, ready, err := start()
		if err != nil {
			tb.Fatalf("kubetest: %v", err)
		}
		err = waitReady(p, ready)
		if err == nil {
			return p
		}
		p.stop(5 * time.Second)
		if attempt < 3 && p.exited() && strings.Contains(p.tail(8<<10), "address already in use") {
			tb.Logf("kubetest: %s lost a port race, starting it again", name)
			continue
		}
		tb.Fatalf("kubetest: %s not ready: %v\n%s", name, err, p.tail(32<<10))
	}
}

func waitReady(p *proc, ready func() error) error {
	deadline := time.Now().Add(readyTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return p.exitError()
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", readyTimeout, err)
		}
	}
}

// probe GETs url and wants 200, and want in the body when want is set.
func probe(client *http.Client, url, token, want string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, body)
	}
	return nil
}

// binDir finds the binaries: $TRUSTPOOL_KUBE_BIN, else bin/kube at the
// root of the module the test runs in.
func binDir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("TRUSTPOOL_KUBE_BIN")
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			tb.Fatalf("kubetest: %v", err)
		}
		dir = filepath.Join(root, "bin", "kube")
	}
	var missing []string
	for _, b := range bins {
		if st, err := os.Stat(filepath.Join(dir, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("kubetest: %s not found in %s: `make kube` builds them", strings.Join(missing, ", "), dir)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return dir
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: set TRUSTPOOL_KUBE_BIN")
		}
		dir = parent
	}
}

func freePort(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("kubetest: %v", err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func token() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
