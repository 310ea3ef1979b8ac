package main

import (
	"time"

	"github.com/spf13/cobra"

	"trustpool/internal/demo"
)

func demoCmd(out *output) *cobra.Command {
	var cfg demo.Config
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a server and simulated compute nodes on this machine and show the trusted pool",
		Long: `demo runs an attestation server and simulated compute nodes (software TPMs) on
this machine and prints the pool after every round of attestation: a table, or with
--output json (or --json) the pool as one JSON object a line, a line a round.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out, cfg.JSON = cmd.OutOrStdout(), out.JSON()
			return demo.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Nodes, "nodes", 3, "simulated compute nodes")
	f.IntVar(&cfg.Tampered, "tampered", 1, "nodes that boot a tampered hypervisor")
	f.IntVar(&cfg.NoLaunch, "no-launch", 0, "nodes that boot without an Intel TXT measured launch (swtpm)")
	f.BoolVar(&cfg.Once, "once", false, "one full round: print the pool and exit")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:0", "server address")
	f.StringVar(&cfg.StateDir, "state-dir", "", "server state directory (default: a temporary one, removed at exit)")
	f.StringVar(&cfg.Backend, "tpm", "", "software TPM: swtpm or simulator (default swtpm when installed)")
	f.StringVar(&cfg.Mode, "mode", "pull", "agents' mode: pull (the server dials each agent) or push (agents open no port and post their evidence)")
	f.DurationVar(&cfg.Interval, "interval", 10*time.Second, "re-attestation interval")
	return cmd
}
