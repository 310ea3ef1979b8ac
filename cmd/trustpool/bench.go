package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"trustpool/internal/bench"
	"trustpool/internal/fleetsim"
	simfleet "trustpool/internal/fleetsim/fleet"
)

func benchCmd(out *output) *cobra.Command {
	var cfg bench.Config
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure verification, scheduler queries, restart and re-evaluation on this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := os.MkdirTemp("", "trustpool-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			cfg.Dir = dir
			p := out.progressTo(cmd.ErrOrStderr())
			if p != nil {
				cfg.Progress = p.Report
			}
			res, err := bench.Run(cmd.Context(), cfg)
			p.Done()
			if err != nil {
				return err
			}
			return out.print(cmd.OutOrStdout(), res, res.WriteTable)
		},
	}
	cmd.Flags().DurationVar(&cfg.Duration, "duration", 3*time.Second, "time per throughput figure")
	cmd.Flags().IntVar(&cfg.Hosts, "hosts", 10000, "hosts in the simulated fleet")
	cmd.AddCommand(benchFleetCmd(out), benchFleetSimCmd())
	return cmd
}

// benchFleetSimCmd is a simulator process of bench fleet: a slice of the
// simulated fleet, driven by its parent over standard input and output
// (simfleet.Serve); it logs to standard error.
func benchFleetSimCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "fleet-sim",
		Short:  "A simulator process of bench fleet (started by it; test equipment)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
			return simfleet.Serve(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout(), log)
		},
	}
}

func benchFleetCmd(out *output) *cobra.Command {
	var (
		cfg      bench.FleetConfig
		ak       string
		noCache  bool
		keepLogs bool
	)
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Run a real server against a simulated fleet over loopback mutual TLS and measure it",
		Long: `Starts a trustpool server process, or --replicas N of them sharing the database and
the CA (and, with --db postgres, a throw-away PostgreSQL cluster), a simulated fleet in
simulator processes (test equipment: software EKs and AKs, each node on its own
127.0.0.0/8 address; as few processes as keep every node's connection alive under the
open-file limit, or --sim-procs), enrolls every node with join tokens, imports the first node as the golden host,
says hello from every node, then measures for --duration and prints the result: a table
of figures, or with --output json (or --json) one JSON object on one line.
With replicas the fleet talks to replica 1 and the readers to the last replica alive;
--kill-replica-after kills replica 2 with SIGKILL and reports how long its hosts took to
be held again and whether any verdict was lost. With --mode push the nodes open no port:
each enrolls in push mode and runs the agent's push loop (challenge, evidence, long-poll).
RSA keys come from a cache file
(--key-cache) so that large fleets start in seconds; only the missing keys are generated,
by this process, before the simulator processes read their slices of the cache.
Progress (nodes enrolled, attested, seconds measured) goes to standard error when it is a
terminal, or with --progress.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch ak {
			case "rsa":
				cfg.AK = fleetsim.RSA2048
			case "p256":
				cfg.AK = fleetsim.P256
			default:
				return fmt.Errorf("--ak %q: want rsa or p256", ak)
			}
			if noCache {
				cfg.KeyCache = ""
			}
			dir, err := os.MkdirTemp("", "trustpool-bench-fleet-")
			if err != nil {
				return err
			}
			if keepLogs {
				fmt.Fprintf(cmd.ErrOrStderr(), "bench fleet: scratch directory %s is kept\n", dir)
			} else {
				defer os.RemoveAll(dir)
			}
			cfg.Dir = dir
			var logTo io.Writer = cmd.ErrOrStderr()
			if p := out.progressTo(cmd.ErrOrStderr()); p != nil {
				cfg.Progress, logTo = p.Report, p
				defer p.Done()
			}
			cfg.Log = slog.New(slog.NewTextHandler(logTo, &slog.HandlerOptions{Level: slog.LevelInfo}))
			res, err := bench.RunFleet(cmd.Context(), cfg)
			if res != nil {
				if perr := printFleet(cmd.OutOrStdout(), out, res); err == nil {
					err = perr
				}
			}
			return err
		},
	}
	cache := ""
	if d, err := os.UserCacheDir(); err == nil {
		cache = filepath.Join(d, "trustpool-bench", "rsa2048.pem")
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Nodes, "nodes", 1000, "simulated nodes")
	f.DurationVar(&cfg.Interval, "interval", 60*time.Second, "the server's re-attestation interval")
	f.DurationVar(&cfg.Validity, "validity", 0, "how long a verdict stands (default 3 × interval, the server's default)")
	f.DurationVar(&cfg.Duration, "duration", 3*time.Minute, "measured window, after every node is enrolled and attested")
	f.StringVar(&cfg.DB, "db", "", "store: empty for SQLite, postgres for a throw-away cluster, or a postgres:// URL")
	f.IntVar(&cfg.Tampered, "tampered", 10, "nodes that reboot into a tampered hypervisor during the window and say hello")
	f.StringVar(&ak, "ak", "rsa", "the nodes' AK: rsa (RSA-2048, RSASSA) or p256 (ECDSA)")
	f.StringVar(&cfg.KeyCache, "key-cache", cache, "file of cached RSA-2048 keys for the simulated EKs and AKs")
	f.BoolVar(&noCache, "no-key-cache", false, "generate every key")
	f.IntVar(&cfg.Workers, "workers", 16, "concurrent enrollments and hellos")
	f.IntVar(&cfg.SimProcs, "sim-procs", 0, "simulator processes the fleet is spread over (0: as few as keep every node's connections alive under the open-file limit)")
	f.IntVar(&cfg.Replicas, "replicas", 1, "server processes sharing the PostgreSQL database and the CA (more than 1 needs --db)")
	f.DurationVar(&cfg.KillReplicaAfter, "kill-replica-after", 0, "with replicas: SIGKILL replica 2 this long into the window and measure the takeover")
	f.DurationVar(&cfg.LeaseTime, "lease-time", 0, "with replicas: the servers' --lease-time (default the server's, 30s)")
	f.IntVar(&cfg.AgentConns, "agent-conns", 0, "the servers' --agent-conns: agent connections kept open between challenges (0 the server's default, -1 none)")
	f.StringVar(&cfg.Mode, "mode", "pull", "the nodes' agent mode: pull (the server challenges each node) or push (each node pushes its evidence)")
	f.BoolVar(&keepLogs, "keep", false, "keep the scratch directory (the server's log and state)")
	return cmd
}

// printFleet prints the fleet benchmark's result: one JSON object on one
// line (what BENCHMARKS.md's runs recorded), or its figures as a table,
// nested objects flattened to dotted names (attest_latency_ms.p99).
func printFleet(w io.Writer, out *output, res *bench.FleetResult) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	if out.JSON() {
		_, err := fmt.Fprintf(w, "%s\n", b)
		return err
	}
	return objectTable(w, b)
}
