package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"trustpool/internal/bench"
)

func benchCmd() *cobra.Command {
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
			cfg.Dir, cfg.Out = dir, cmd.OutOrStdout()
			return bench.Run(cmd.Context(), cfg)
		},
	}
	cmd.Flags().DurationVar(&cfg.Duration, "duration", 3*time.Second, "time per throughput figure")
	cmd.Flags().IntVar(&cfg.Hosts, "hosts", 10000, "hosts in the simulated fleet")
	return cmd
}
