package main

import (
	"time"

	"github.com/spf13/cobra"

	"trustpool/internal/demo"
)

func demoCmd() *cobra.Command {
	var cfg demo.Config
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a server and simulated compute nodes on this machine and show the trusted pool",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.OutOrStdout()
			return demo.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Nodes, "nodes", 3, "simulated compute nodes")
	f.IntVar(&cfg.Tampered, "tampered", 1, "nodes that boot a tampered hypervisor")
	f.IntVar(&cfg.NoLaunch, "no-launch", 0, "nodes that boot without an Intel TXT measured launch (swtpm)")
	f.BoolVar(&cfg.Once, "once", false, "one full round: print the pool and exit")
	f.BoolVar(&cfg.JSON, "json", false, "print the pool as JSON (one line per round)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:0", "server address")
	f.StringVar(&cfg.StateDir, "state-dir", "", "server state directory (default: a temporary one, removed at exit)")
	f.StringVar(&cfg.Backend, "tpm", "", "software TPM: swtpm or simulator (default swtpm when installed)")
	f.StringVar(&cfg.Mode, "mode", "pull", "agents' mode: pull (the server dials each agent) or push (agents open no port and post their evidence)")
	f.DurationVar(&cfg.Interval, "interval", 10*time.Second, "re-attestation interval")
	return cmd
}
