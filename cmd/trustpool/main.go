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
	root := &cobra.Command{
		Use:           "trustpool",
		Short:         "Trusted Computing Pools: attest compute nodes with their TPMs and keep workloads on proven ones",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serverCmd(), agentCmd(), demoCmd(), benchCmd(), tokenCmd(), auditCmd())
	root.AddCommand(eventlogCmd(), verifyCmd(), configCmd())
	// The operator's verbs talk to a server's API.
	var af apiFlags
	ops := []*cobra.Command{hostsCmd(&af), hostCmd(&af), referenceCmd(&af), policyCmd(&af), evidenceCmd(&af)}
	ops = append(ops, changeCmds(&af)...)
	for _, c := range ops {
		af.register(c)
		root.AddCommand(c)
	}
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "trustpool:", err)
		os.Exit(1)
	}
}
