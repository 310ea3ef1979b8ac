package main

import (
	"github.com/spf13/cobra"

	"trustpool/internal/config"
)

func configCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Configuration files of the server and the agent"}
	cmd.AddCommand(&cobra.Command{
		Use:       "example server|agent",
		Short:     "Print a complete, commented example configuration file (TOML)",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"server", "agent"},
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := config.Example(args[0])
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	})
	return cmd
}
