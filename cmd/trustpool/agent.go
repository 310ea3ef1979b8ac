package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"trustpool/internal/agent"
	"trustpool/internal/agent/bootsim"
	"trustpool/internal/agent/tpm"
	"trustpool/internal/config"
)

// agentFlagOnly are the agent's flags with no key in the config file.
var agentFlagOnly = []string{"config", "join-token", "simulate-boot"}

func agentCmd() *cobra.Command { return agentCommand(runAgent) }

// agentCommand returns the agent command; run gets the merged
// configuration, the agent's configuration built from it and the
// --simulate-boot flag.
func agentCommand(run func(cmd *cobra.Command, c config.Agent, cfg agent.Config, simulate string) error) *cobra.Command {
	var (
		fl        = config.DefaultAgent()
		cfgFile   string
		joinToken string
		simulate  string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the trust agent on a compute node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := mergeAgent(cmd, cfgFile, &fl)
			cfg, err2 := agentConfig(c, joinToken, simulate)
			if err := errors.Join(err, err2); err != nil {
				return err
			}
			return run(cmd, c, cfg, simulate)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "TOML configuration file (`trustpool config example agent`); flags given win over it")
	f.StringVar(&fl.Name, "name", fl.Name, "this node's host name, as the scheduler knows it")
	f.StringVar(&fl.Server, "server", "", "attestation server URL, e.g. https://attest.example:8443")
	f.StringVar(&fl.ServerCA, "server-ca", "", "PEM file of the CA that signed the server's certificate (the server's ca.pem)")
	f.StringVar(&fl.Mode, "mode", fl.Mode, "pull: the server dials --listen; push: open no port, fetch challenges from the server and post evidence (through $HTTPS_PROXY if set)")
	f.StringVar(&fl.Listen, "listen", fl.Listen, "address to answer challenges on (pull mode)")
	f.StringVar(&fl.Advertise, "advertise", "", "URL the server reaches this agent at (default https://<listen address>)")
	f.StringVar(&fl.StateDir, "state-dir", fl.StateDir, "directory for the agent's TLS key and certificate")
	f.StringVar(&fl.TPM, "tpm", fl.TPM, "TPM: a device path, swtpm://127.0.0.1:PORT, or simulator")
	f.StringVar(&fl.EventLog, "event-log", "", "firmware event log (default "+agent.DefaultEventLog+" when it exists)")
	f.StringVar(&fl.DRTMLog, "drtm-log", "", "Intel TXT (DRTM) event log file, or "+agent.DRTMFromTXTHeap+" to read it from the TXT heap in "+agent.PhysMem+" at start")
	f.StringVar(&joinToken, "join-token", "", "one-time join token from the operator (without one, enrollment waits for approval)")
	f.StringVar(&fl.JoinTokenFile, "join-token-file", "", "file holding the one-time join token (instead of --join-token)")
	f.StringVar(&simulate, "simulate-boot", "", "demo/test only: perform a simulated measured boot (clean or tampered) on a software TPM first")
	f.TextVar(&fl.LogLevel, "log-level", fl.LogLevel, "log level: debug, info, warn or error")
	f.StringVar(&fl.LogFormat, "log-format", fl.LogFormat, "log lines: text, or json (one object a line)")
	return cmd
}

// runAgent runs the trust agent configured by c.
func runAgent(cmd *cobra.Command, c config.Agent, cfg agent.Config, simulate string) error {
	cfg.Log = newLogger(cmd.ErrOrStderr(), c.LogFormat, c.LogLevel).With("host", cfg.Name)
	t, err := tpm.Open(c.TPM)
	if err != nil {
		return err
	}
	defer t.Close()
	if simulate != "" {
		if err := simulateBoot(t, c.TPM, simulate, &cfg); err != nil {
			return err
		}
	}
	a, err := agent.New(cfg, t)
	if err != nil {
		return err
	}
	return a.Run(cmd.Context())
}

// mergeAgent returns the agent's configuration: the file's (when cfgFile
// is set) with every flag the person gave over it, validated. Every
// problem of the file and the flags is reported at once.
func mergeAgent(cmd *cobra.Command, cfgFile string, fl *config.Agent) (config.Agent, error) {
	if cfgFile == "" {
		return *fl, fl.Validate()
	}
	c, err := config.LoadAgent(cfgFile)
	config.Override(&c, fl, cmd.Flags().Changed)
	return c, errors.Join(err, c.Validate())
}

// agentConfig builds agent.Config from c, reading the server's CA and the
// join token from the files c names.
func agentConfig(c config.Agent, joinToken, simulate string) (agent.Config, error) {
	cfg := agent.Config{
		Name: c.Name, Server: c.Server, Mode: c.Mode, Listen: c.Listen, Advertise: c.Advertise,
		StateDir: c.StateDir, EventLog: c.EventLog, DRTMLog: c.DRTMLog, JoinToken: joinToken,
	}
	var errs []error
	if c.ServerCA != "" {
		ca, err := os.ReadFile(c.ServerCA)
		if err != nil {
			errs = append(errs, fmt.Errorf("server CA: %w", err))
		}
		cfg.ServerCA = ca
	}
	if c.JoinTokenFile != "" {
		if joinToken != "" {
			errs = append(errs, errors.New("--join-token and join-token-file: give one"))
		}
		b, err := os.ReadFile(c.JoinTokenFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("join token: %w", err))
		} else if cfg.JoinToken = strings.TrimSpace(string(b)); cfg.JoinToken == "" {
			errs = append(errs, fmt.Errorf("join token: %s is empty", c.JoinTokenFile))
		}
	}
	if cfg.EventLog == "" && simulate == "" {
		if _, err := os.Stat(agent.DefaultEventLog); err == nil {
			cfg.EventLog = agent.DefaultEventLog
		}
	}
	return cfg, errors.Join(errs...)
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
