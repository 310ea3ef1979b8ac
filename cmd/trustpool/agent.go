package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"trustpool/internal/agent"
	"trustpool/internal/agent/bootsim"
	"trustpool/internal/agent/tpm"
)

func agentCmd() *cobra.Command {
	var (
		cfg      agent.Config
		caFile   string
		tpmAddr  string
		simulate string
		logLevel slog.Level
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the trust agent on a compute node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})).With("host", cfg.Name)
			ca, err := os.ReadFile(caFile)
			if err != nil {
				return fmt.Errorf("server CA: %w", err)
			}
			cfg.ServerCA = ca
			t, err := tpm.Open(tpmAddr)
			if err != nil {
				return err
			}
			defer t.Close()
			if simulate != "" {
				if err := simulateBoot(t, tpmAddr, simulate, &cfg); err != nil {
					return err
				}
			}
			a, err := agent.New(cfg, t)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	host, _ := os.Hostname()
	f.StringVar(&cfg.Name, "name", host, "this node's host name, as the scheduler knows it")
	f.StringVar(&cfg.Server, "server", "", "attestation server URL, e.g. https://attest.example:8443")
	f.StringVar(&caFile, "server-ca", "", "PEM file of the CA that signed the server's certificate (the server's ca.pem)")
	f.StringVar(&cfg.Mode, "mode", "pull", "pull: the server dials --listen; push: open no port, fetch challenges from the server and post evidence (through $HTTPS_PROXY if set)")
	f.StringVar(&cfg.Listen, "listen", ":9443", "address to answer challenges on (pull mode)")
	f.StringVar(&cfg.Advertise, "advertise", "", "URL the server reaches this agent at (default https://<listen address>)")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/trustpool-agent", "directory for the agent's TLS key and certificate")
	f.StringVar(&tpmAddr, "tpm", "/dev/tpmrm0", "TPM: a device path, swtpm://127.0.0.1:PORT, or simulator")
	f.StringVar(&cfg.EventLog, "event-log", "", "firmware event log (default "+agent.DefaultEventLog+" when it exists)")
	f.StringVar(&cfg.DRTMLog, "drtm-log", "", "Intel TXT (DRTM) event log file, or "+agent.DRTMFromTXTHeap+" to read it from the TXT heap in "+agent.PhysMem+" at start")
	f.StringVar(&cfg.JoinToken, "join-token", "", "one-time join token from the operator (without one, enrollment waits for approval)")
	f.StringVar(&simulate, "simulate-boot", "", "demo/test only: perform a simulated measured boot (clean or tampered) on a software TPM first")
	f.TextVar(&logLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if cfg.EventLog == "" && simulate == "" {
			if _, err := os.Stat(agent.DefaultEventLog); err == nil {
				cfg.EventLog = agent.DefaultEventLog
			}
		}
		return nil
	}
	return cmd
}

// simulateBoot measures a simulated boot into a software TPM and points the
// agent at its event log. It refuses a hardware TPM.
func simulateBoot(t *tpm.TPM, addr, profile string, cfg *agent.Config) error {
	if profile != "clean" && profile != "tampered" {
		return fmt.Errorf("--simulate-boot %q: want clean or tampered", profile)
	}
	if addr != tpm.SimulatorAddr {
		return fmt.Errorf("--simulate-boot works on the in-process simulator only (swtpm nodes are booted by the demo)")
	}
	logs, err := bootsim.Boot(t, nil, bootsim.Profile{Tampered: profile == "tampered"})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return err
	}
	cfg.EventLog = filepath.Join(cfg.StateDir, "srtm.log")
	return os.WriteFile(cfg.EventLog, logs.SRTM, 0o600)
}
