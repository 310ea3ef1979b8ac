package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"trustpool/internal/agent"
	"trustpool/internal/config"
	"trustpool/internal/server"
)

// TestConfigFlagsOverrideFile runs `trustpool server --config` with some
// flags: the flags given win, the file's other values stand, and a flag
// not given does not reset what the file set.
func TestConfigFlagsOverrideFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "server.toml")
	os.WriteFile(file, []byte(`
state_dir = "`+dir+`"
listen = "127.0.0.1:9001"
interval = "1m"
enroll_rate = 5.0
webhooks = ["https://hooks.example/a"]
webhook_secret_env = "TP_TEST_WEBHOOK_SECRET"
`), 0o600)
	t.Setenv("TP_TEST_WEBHOOK_SECRET", "s3cret")
	var got server.Config
	cmd := serverCommand(func(_ *cobra.Command, _ config.Server, cfg server.Config) error { got = cfg; return nil })
	cmd.SetArgs([]string{"--config", file, "--listen", "127.0.0.1:9002", "--challenge-timeout", "3s"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got.Listen != "127.0.0.1:9002" || got.Integrity.Timeout != 3*time.Second {
		t.Errorf("flags did not win: listen %s, timeout %v", got.Listen, got.Integrity.Timeout)
	}
	if got.StateDir != dir || got.Integrity.Interval != time.Minute || got.EnrollPerMinute != 5 {
		t.Errorf("file values lost: %+v", got)
	}
	if got.Webhooks == nil || string(got.Webhooks.Secret) != "s3cret" {
		t.Errorf("webhook secret not read from the environment: %+v", got.Webhooks)
	}

	// The agent: the join token comes from the file join_token_file names.
	tok := filepath.Join(dir, "join-token")
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(tok, []byte("tok-123\n"), 0o600)
	os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600)
	afile := filepath.Join(dir, "agent.toml")
	os.WriteFile(afile, []byte(`
name = "node1.example"
server = "https://attest.example:8443"
server_ca = "`+ca+`"
join_token_file = "`+tok+`"
mode = "push"
`), 0o600)
	var gotA agent.Config
	acmd := agentCommand(func(_ *cobra.Command, _ config.Agent, cfg agent.Config, _ string) error { gotA = cfg; return nil })
	acmd.SetArgs([]string{"--config", afile, "--name", "node2.example"})
	if err := acmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if gotA.Name != "node2.example" || gotA.Mode != "push" || gotA.JoinToken != "tok-123" || gotA.Server != "https://attest.example:8443" {
		t.Errorf("agent config: %+v", gotA)
	}
}

// TestConfigEveryErrorAtOnce: an unknown key, a bad value and a missing
// file are reported together.
func TestConfigEveryErrorAtOnce(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "server.toml")
	os.WriteFile(file, []byte("state_dir = \""+dir+"\"\nlistenn = \"x\"\nlisten = \"nope\"\nek_ca_bundle = \""+dir+"/missing.pem\"\n"), 0o600)
	cmd := serverCommand(func(*cobra.Command, config.Server, server.Config) error { t.Fatal("ran"); return nil })
	cmd.SetArgs([]string{"--config", file})
	cmd.SetErr(new(bytes.Buffer))
	cmd.SilenceUsage = true
	err := cmd.Execute()
	for _, w := range []string{`unknown key "listenn"`, `listen "nope"`, "missing.pem"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %s: %v", w, err)
		}
	}
}

// TestEveryFlagHasAKey: each flag of server and agent is a key of its
// config file, or one of the few flag-only ones.
func TestEveryFlagHasAKey(t *testing.T) {
	for _, tc := range []struct {
		cmd      *cobra.Command
		keys     []string
		flagOnly []string
	}{
		{serverCmd(), config.FlagNames(&config.Server{}), serverFlagOnly},
		{agentCmd(), config.FlagNames(&config.Agent{}), agentFlagOnly},
	} {
		tc.cmd.Flags().VisitAll(func(f *pflag.Flag) {
			if !slices.Contains(tc.keys, f.Name) && !slices.Contains(tc.flagOnly, f.Name) {
				t.Errorf("%s --%s has no config key", tc.cmd.Name(), f.Name)
			}
		})
		for _, k := range tc.keys {
			if tc.cmd.Flags().Lookup(k) == nil {
				t.Errorf("%s: config field with flag %s has no such flag", tc.cmd.Name(), k)
			}
		}
	}
}

func TestConfigExampleCommand(t *testing.T) {
	for _, c := range []string{"server", "agent"} {
		cmd := configCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"example", c})
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		want, _ := config.Example(c)
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("config example %s prints something else", c)
		}
	}
}
