package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"trustpool/internal/api"
	"trustpool/internal/enroll"
)

func hostsCmd(af *apiFlags) *cobra.Command {
	var (
		watch bool
		every time.Duration
	)
	cmd := &cobra.Command{
		Use: "hosts", Short: "Show the pool: every host's trust level and why", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			if watch {
				return watchPool(cmd.Context(), c, cmd.OutOrStdout(), every)
			}
			var p api.Pool
			if err := c.Do(cmd.Context(), "GET", "/v1/pool", nil, &p); err != nil {
				return err
			}
			if af.json {
				return printJSON(cmd.OutOrStdout(), p)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tTRUST\tVTIME\tPOLICY\tREASON")
			for _, h := range p.Hosts {
				var rs []string
				for _, r := range h.Reasons {
					rs = append(rs, r.Message)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Host, h.Level, h.VTime, h.Policy, strings.Join(rs, "; "))
			}
			return tw.Flush()
		},
	}
	simple := func(use, short, method, path string) *cobra.Command {
		return &cobra.Command{
			Use: use + " NAME", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := af.client()
				if err != nil {
					return err
				}
				var out any
				if err := c.Do(cmd.Context(), method, fmt.Sprintf(path, args[0]), nil, &out); err != nil {
					return err
				}
				if out == nil {
					return nil
				}
				return printJSON(cmd.OutOrStdout(), out)
			},
		}
	}
	cmd.Flags().BoolVar(&watch, "watch", false, "print every host, then every level change, until interrupted")
	cmd.Flags().DurationVar(&every, "every", 2*time.Second, "with --watch: how often the pool is read")
	cmd.AddCommand(
		simple("show", "Show a host with its verdict and history", "GET", "/v1/hosts/%s"),
		simple("attest", "Attest a host now and show the verdict", "POST", "/v1/hosts/%s/attest"),
		simple("delete", "Remove a host (it reads as unknown at once)", "DELETE", "/v1/hosts/%s"),
	)
	var ek string
	approve := &cobra.Command{
		Use: "approve NAME --ek FINGERPRINT", Short: "Admit the TPM waiting under NAME whose EK has this fingerprint (see hosts pending)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			var out any
			if err := c.Do(cmd.Context(), "POST", "/v1/hosts/"+args[0]+"/approve", map[string]string{"ek_fingerprint": ek}, &out); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	approve.Flags().StringVar(&ek, "ek", "", "SHA-256 fingerprint of the EK approved (required)")
	approve.MarkFlagRequired("ek")
	pending := &cobra.Command{
		Use: "pending", Short: "List TPMs that enrolled without a join token and wait for approval", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			var ps []enroll.PendingView
			if err := c.Do(cmd.Context(), "GET", "/v1/pending", nil, &ps); err != nil {
				return err
			}
			if af.json {
				return printJSON(cmd.OutOrStdout(), ps)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOST\tEK FINGERPRINT\tEK CERTIFICATE\tSOURCE\tSINCE")
			for _, p := range ps {
				cert := "none"
				if p.EKCertSubject != "" {
					cert = p.EKCertSubject + " (issuer " + p.EKCertIssuer + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Host, p.EKFingerprint, cert, p.Source, p.Created.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(approve, pending)
	var ttl string
	join := &cobra.Command{
		Use: "join-token NAME", Short: "Issue a one-time join token bound to a host name", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			var out struct {
				Host    string `json:"host"`
				Token   string `json:"token"`
				Expires string `json:"expires"`
			}
			if err := c.Do(cmd.Context(), "POST", "/v1/join-tokens", map[string]string{"host": args[0], "ttl": ttl}, &out); err != nil {
				return err
			}
			if af.json {
				return printJSON(cmd.OutOrStdout(), out)
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.Token)
			return nil
		},
	}
	join.Flags().StringVar(&ttl, "ttl", "", "lifetime (default 24h)")
	cmd.AddCommand(join)
	return cmd
}
