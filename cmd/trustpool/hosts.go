package main

import (
	"fmt"
	"io"
	"net/url"
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
				return watchPool(cmd.Context(), c, cmd.OutOrStdout(), every, af.out.JSON())
			}
			var p api.Pool
			if err := c.Do(cmd.Context(), "GET", "/v1/pool", nil, &p); err != nil {
				return err
			}
			return af.out.print(cmd.OutOrStdout(), p, func(w io.Writer) error { return poolTable(w, p.Hosts) })
		},
	}
	cmd.Flags().BoolVar(&watch, "watch", false, "print every host, then every level change, until interrupted")
	cmd.Flags().DurationVar(&every, "every", 2*time.Second, "with --watch: how often the pool is read")
	// host is the named host's path, the name escaped.
	host := func(name, rest string) string { return "/v1/hosts/" + url.PathEscape(name) + rest }
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a host with its verdict and history (as trustpool host NAME)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return showHost(cmd, af, args[0]) },
	}
	attest := &cobra.Command{
		Use: "attest NAME", Short: "Attest a host now and show the verdict", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			var e api.PoolEntry
			if err := c.Do(cmd.Context(), "POST", host(args[0], "/attest"), nil, &e); err != nil {
				return err
			}
			return af.out.print(cmd.OutOrStdout(), e, func(w io.Writer) error { return poolTable(w, []api.PoolEntry{e}) })
		},
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Remove a host (it reads as unknown at once)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), "DELETE", host(args[0], ""), nil, nil); err != nil {
				return err
			}
			return af.out.print(cmd.OutOrStdout(), map[string]string{"deleted": args[0]}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "deleted host %s\n", args[0])
				return err
			})
		},
	}
	cmd.AddCommand(show, attest, del)
	var ek string
	approve := &cobra.Command{
		Use: "approve NAME --ek FINGERPRINT", Short: "Admit the TPM waiting under NAME whose EK has this fingerprint (see hosts pending)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			var h api.HostView
			if err := c.Do(cmd.Context(), "POST", host(args[0], "/approve"), map[string]string{"ek_fingerprint": ek}, &h); err != nil {
				return err
			}
			return af.out.print(cmd.OutOrStdout(), h, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "admitted %s (%s); it is attested now\n", h.Name, h.State)
				return err
			})
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
			return af.out.print(cmd.OutOrStdout(), ps, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HOST\tEK FINGERPRINT\tEK CERTIFICATE\tSOURCE\tSINCE")
				for _, p := range ps {
					cert := "none"
					if p.EKCertSubject != "" {
						cert = p.EKCertSubject + " (issuer " + p.EKCertIssuer + ")"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", p.Host, p.EKFingerprint, cert, p.Source, p.Created.Format(time.RFC3339))
				}
				return tw.Flush()
			})
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
			// The table is the token alone, for TOKEN=$(trustpool hosts join-token NAME).
			return af.out.print(cmd.OutOrStdout(), out, func(w io.Writer) error {
				_, err := fmt.Fprintln(w, out.Token)
				return err
			})
		},
	}
	join.Flags().StringVar(&ttl, "ttl", "", "lifetime (default 24h)")
	cmd.AddCommand(join)
	return cmd
}

// poolTable is the pool's table: a host a line, with its reasons.
func poolTable(w io.Writer, hosts []api.PoolEntry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tTRUST\tVTIME\tPOLICY\tREASON")
	for _, h := range hosts {
		var rs []string
		for _, r := range h.Reasons {
			rs = append(rs, r.Message)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Host, h.Level, h.VTime, h.Policy, strings.Join(rs, "; "))
	}
	return tw.Flush()
}
