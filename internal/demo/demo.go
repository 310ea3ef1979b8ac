// Package demo runs trustpool's main job on one machine: an attestation
// server and N simulated compute nodes, each a separate trust-agent process
// on its own software TPM (swtpm when installed, the in-process simulator
// otherwise) after a simulated measured boot. K nodes boot a tampered
// hypervisor; with swtpm, nodes perform an emulated Intel TXT launch and M of
// them skip it. The demo enrolls every node with a join token, takes the
// known-good values from a clean node (golden host), attests all and prints
// the pool.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"trustpool/internal/agent/bootsim"
	"trustpool/internal/agent/swtpm"
	"trustpool/internal/agent/tpm"
	"trustpool/internal/api"
	"trustpool/internal/enroll"
	"trustpool/internal/httpjson"
	"trustpool/internal/integrity"
	"trustpool/internal/server"
	"trustpool/internal/store"
)

// Config configures a demo run.
type Config struct {
	Nodes    int    // simulated compute nodes (default 3)
	Tampered int    // nodes that boot a tampered hypervisor
	NoLaunch int    // nodes that boot without a measured launch (swtpm only)
	Once     bool   // one full round, print, exit
	JSON     bool   // print the pool as JSON
	Listen   string // server address (default 127.0.0.1:0)
	StateDir string // default: a new temporary directory
	// Backend is "swtpm", "simulator" or "" (swtpm when installed).
	Backend  string
	Interval time.Duration // re-attestation interval (default 10 s)
	// Mode is the agents' mode: "pull" (default: each listens and the
	// server dials it) or "push" (no agent listens: they fetch challenges
	// and post their evidence).
	Mode string
	Exe  string // trustpool binary for the agents (default: this one)
	Out  io.Writer
	Log  *slog.Logger
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Nodes < 1 || c.Nodes > 64 {
		errs = append(errs, fmt.Errorf("--nodes %d: want 1 to 64", c.Nodes))
	}
	if c.Tampered < 0 || c.NoLaunch < 0 || c.Tampered+c.NoLaunch > c.Nodes-1 {
		errs = append(errs, fmt.Errorf("--tampered %d and --no-launch %d: at least one clean node (the golden host) must remain of %d", c.Tampered, c.NoLaunch, c.Nodes))
	}
	switch c.Backend {
	case "", "swtpm", "simulator":
	default:
		errs = append(errs, fmt.Errorf("backend %q: want swtpm or simulator", c.Backend))
	}
	switch c.Mode {
	case "", "pull", "push":
	default:
		errs = append(errs, fmt.Errorf("--mode %q: want pull or push", c.Mode))
	}
	if c.Backend == "simulator" && c.NoLaunch > 0 {
		errs = append(errs, errors.New("--no-launch needs swtpm: the simulator cannot perform a measured launch at all"))
	}
	return errors.Join(errs...)
}

// node is one simulated compute node.
type node struct {
	name     string
	tampered bool
	launch   bool
	dir      string
	tpm      *swtpm.Process // nil with the simulator
	cmd      *exec.Cmd
}

// Run runs the demo until ctx ends (or after one round with Once).
func Run(ctx context.Context, cfg Config) error {
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("demo: find the trustpool binary: %w", err)
		}
		cfg.Exe = exe
	}
	if cfg.Backend == "" {
		cfg.Backend = "simulator"
		if swtpm.Available() == nil {
			cfg.Backend = "swtpm"
		}
	}
	if cfg.Backend == "simulator" && cfg.NoLaunch > 0 {
		return errors.New("--no-launch needs swtpm (apt-get install swtpm swtpm-tools): the simulator cannot perform a measured launch")
	}
	if cfg.StateDir == "" {
		dir, err := os.MkdirTemp("", "trustpool-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg.StateDir = dir
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	srv, err := server.New(ctx, server.Config{
		StateDir: filepath.Join(cfg.StateDir), Listen: cfg.Listen, Log: cfg.Log,
		Integrity: integrity.Config{Interval: cfg.Interval, Log: cfg.Log},
	})
	if err != nil {
		return fmt.Errorf("demo: start server: %w", err)
	}
	defer srv.Close()
	// Deferred in this order so that the server stops challenging before
	// the agents are stopped.
	nodes := plan(cfg)
	defer stopAll(nodes)
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()
	defer func() { cancel(); <-srvDone }()

	caFile := filepath.Join(cfg.StateDir, "ca.pem")
	for _, n := range nodes {
		if err := start(ctx, cfg, srv, caFile, n); err != nil {
			return fmt.Errorf("demo: node %s: %w", n.name, err)
		}
	}
	c := newClient(srv, cfg.StateDir)
	if err := waitAttested(ctx, srv, nodes); err != nil {
		return err
	}
	if err := checkModes(ctx, srv, cfg.Mode, nodes); err != nil {
		return err
	}
	if err := c.Do(ctx, "POST", "/v1/golden", map[string]any{"host": nodes[0].name, "name": "golden",
		"meta": map[string]string{"hypervisor": bootsim.DefaultHypervisor, "source": "demo golden host " + nodes[0].name}}, nil); err != nil {
		return fmt.Errorf("demo: golden-host import from %s: %w", nodes[0].name, err)
	}
	for _, n := range nodes { // a fresh quote from every node under the new policy
		if err := c.Do(ctx, "POST", "/v1/hosts/"+n.name+"/attest", nil, nil); err != nil {
			return fmt.Errorf("demo: attest %s: %w", n.name, err)
		}
	}
	if cfg.Once {
		return printPool(ctx, cfg, srv)
	}
	if !cfg.JSON {
		fmt.Fprintf(cfg.Out, "trustpool demo: %d nodes on %s; API %s (admin token in %s), CA %s; Ctrl-C stops\n",
			len(nodes), cfg.Backend, srv.URL(), filepath.Join(cfg.StateDir, server.AdminTokenFile), caFile)
	}
	tick := time.NewTicker(cfg.Interval)
	defer tick.Stop()
	for {
		if err := printPool(ctx, cfg, srv); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-srvDone:
			srvDone <- err
			return fmt.Errorf("demo: server stopped: %w", err)
		case <-tick.C:
		}
	}
}

func plan(cfg Config) []*node {
	nodes := make([]*node, cfg.Nodes)
	for i := range nodes {
		n := &node{name: fmt.Sprintf("node%d", i+1), launch: cfg.Backend == "swtpm"}
		switch {
		case i >= cfg.Nodes-cfg.Tampered:
			n.tampered = true
		case i >= cfg.Nodes-cfg.Tampered-cfg.NoLaunch:
			n.launch = false
		}
		n.dir = filepath.Join(cfg.StateDir, "nodes", n.name)
		nodes[i] = n
	}
	return nodes
}

// start boots a node's TPM and starts its agent process with a join token.
func start(ctx context.Context, cfg Config, srv *server.Server, caFile string, n *node) error {
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return err
	}
	token := enroll.NewToken()
	now := time.Now()
	if err := srv.Store().CreateJoinToken(ctx, store.JoinToken{Hash: enroll.TokenHash(token), Host: n.name, ExpiresAt: now.Add(time.Hour), CreatedAt: now}); err != nil {
		return err
	}
	args := []string{"agent", "--name", n.name, "--server", srv.URL(), "--server-ca", caFile,
		"--state-dir", n.dir, "--join-token", token, "--log-level", "warn"}
	if cfg.Mode == "push" {
		args = append(args, "--mode", "push")
	} else {
		args = append(args, "--listen", "127.0.0.1:0")
	}
	if cfg.Backend == "swtpm" {
		tpmDir := filepath.Join(n.dir, "tpm")
		if err := os.MkdirAll(tpmDir, 0o700); err != nil {
			return err
		}
		p, err := swtpm.Start(ctx, swtpm.Config{StateDir: tpmDir})
		if err != nil {
			return err
		}
		n.tpm = p
		logs, err := bootSWTPM(p, bootsim.Profile{Tampered: n.tampered, Launch: n.launch})
		if err != nil {
			return err
		}
		srtm, drtm := filepath.Join(n.dir, "srtm.log"), filepath.Join(n.dir, "drtm.log")
		if err := os.WriteFile(srtm, logs.SRTM, 0o600); err != nil {
			return err
		}
		args = append(args, "--tpm", p.Addr(), "--event-log", srtm)
		if len(logs.DRTM) > 0 {
			if err := os.WriteFile(drtm, logs.DRTM, 0o600); err != nil {
				return err
			}
			args = append(args, "--drtm-log", drtm)
		}
	} else {
		profile := "clean"
		if n.tampered {
			profile = "tampered"
		}
		args = append(args, "--tpm", tpm.SimulatorAddr, "--simulate-boot", profile)
	}
	n.cmd = exec.CommandContext(ctx, cfg.Exe, args...)
	n.cmd.Stdout, n.cmd.Stderr = io.Discard, os.Stderr
	n.cmd.Cancel = func() error { return n.cmd.Process.Signal(os.Interrupt) }
	n.cmd.WaitDelay = 5 * time.Second
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	return nil
}

func bootSWTPM(p *swtpm.Process, prof bootsim.Profile) (bootsim.Logs, error) {
	t, err := tpm.Open(p.Addr())
	if err != nil {
		return bootsim.Logs{}, err
	}
	defer t.Close()
	return bootsim.Boot(t, p, prof)
}

func stopAll(nodes []*node) {
	for _, n := range nodes {
		if n.cmd != nil && n.cmd.Process != nil {
			n.cmd.Process.Signal(os.Interrupt)
			n.cmd.Wait()
		}
		if n.tpm != nil {
			n.tpm.Stop()
		}
	}
}

// checkModes fails unless every node enrolled in the demo's mode.
func checkModes(ctx context.Context, srv *server.Server, mode string, nodes []*node) error {
	want := store.ModePull
	if mode == "push" {
		want = store.ModePush
	}
	for _, n := range nodes {
		h, err := srv.Store().GetHost(ctx, n.name)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		if h.Mode != want {
			return fmt.Errorf("demo: %s enrolled in %s mode, want %s", n.name, h.Mode, want)
		}
	}
	return nil
}

// waitAttested waits until every node has a verdict (its first attestation
// after enrollment), or fails naming the nodes that have none.
func waitAttested(ctx context.Context, srv *server.Server, nodes []*node) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var missing []string
		for _, n := range nodes {
			if _, ok := srv.Integrity().Cache().Verdict(n.name); !ok {
				missing = append(missing, n.name)
			}
			if n.cmd.ProcessState != nil {
				return fmt.Errorf("demo: the agent of %s exited: %s", n.name, n.cmd.ProcessState)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: no attestation of %s within 60 s (see the agents' logs above)", strings.Join(missing, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func printPool(ctx context.Context, cfg Config, srv *server.Server) error {
	p, err := api.PoolOf(ctx, srv.Store(), srv.Integrity().Cache(), time.Now())
	if err != nil {
		return err
	}
	if cfg.JSON {
		b, err := json.Marshal(p)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(cfg.Out, "%s\n", b)
		return err
	}
	tw := tabwriter.NewWriter(cfg.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tTRUST\tVTIME\tREASON")
	for _, h := range p.Hosts {
		var reasons []string
		for _, r := range h.Reasons {
			reasons = append(reasons, r.Message)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", h.Host, h.Level, h.VTime, strings.Join(reasons, "; "))
	}
	return tw.Flush()
}

// newClient calls the server's API as the admin, trusting only its CA.
func newClient(srv *server.Server, stateDir string) *httpjson.Client {
	tok, _ := os.ReadFile(filepath.Join(stateDir, server.AdminTokenFile))
	return api.NewClient(srv.URL(), srv.CAPEM(), strings.TrimSpace(string(tok)))
}
