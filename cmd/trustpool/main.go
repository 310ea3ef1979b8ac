// Command trustpool is the whole system in one binary: the attestation
// server, the trust agent, the demo and the operator's tools.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "trustpool:", err)
		os.Exit(1)
	}
}

// rootCmd is the trustpool command with every subcommand. --output (with
// its alias --json) and --progress are the root's persistent flags: every
// command that prints data renders it through the one output.
func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "trustpool",
		Short:         "Trusted Computing Pools: attest compute nodes with their TPMs and keep workloads on proven ones",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	out := &output{}
	out.register(root.PersistentFlags())
	root.AddCommand(serverCmd(), agentCmd(), demoCmd(out), benchCmd(out), tokenCmd(out), auditCmd(out))
	root.AddCommand(eventlogCmd(out), verifyCmd(out), configCmd())
	// The operator's verbs talk to a server's API.
	af := apiFlags{out: out}
	ops := []*cobra.Command{hostsCmd(&af), hostCmd(&af), referenceCmd(&af), policyCmd(&af), evidenceCmd(&af)}
	ops = append(ops, changeCmds(&af)...)
	for _, c := range ops {
		af.register(c)
		root.AddCommand(c)
	}
	return root
}
