package main

import (
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"trustpool/internal/integrity"
	"trustpool/internal/server"
)

func serverCmd() *cobra.Command {
	var (
		cfg      server.Config
		interval time.Duration
		validity time.Duration
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the attestation server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			cfg.Integrity = integrity.Config{Interval: interval, Validity: validity}
			s, err := server.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			cfg.Log.Info("attestation server listening", "url", s.URL(), "state", cfg.StateDir)
			return s.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/trustpool", "directory for the CA, certificates, credentials and the SQLite store")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8443", "address to serve HTTPS on")
	f.StringSliceVar(&cfg.Names, "name", nil, "extra DNS name or IP for the server certificate (repeatable)")
	f.StringVar(&cfg.DSN, "db", "", "store: sqlite:/path or a postgres:// URL (default SQLite in the state directory)")
	f.DurationVar(&interval, "interval", 30*time.Second, "re-attestation interval")
	f.DurationVar(&validity, "validity", 0, "how long a verdict stands (default 3 × interval)")
	return cmd
}
