package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"trustpool/internal/auth"
)

// tokenCmd is `trustpool token`: the admin's verbs for API tokens.
func tokenCmd(out *output) *cobra.Command {
	f := apiFlags{out: out}
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens (needs an admin token)",
		Long: `API tokens are bearer credentials with one role:
  admin      everything, including tokens
  reader     read-only views and the audit log
  scheduler  pool queries (filter, PollHosts)
  agent      agent calls that are not bound to the agent's certificate
The server keeps only their SHA-256: a token is shown once, when it is created.
Revoked tokens stay listed and keep their names.`,
	}
	f.register(cmd)
	cmd.AddCommand(tokenCreateCmd(&f), tokenListCmd(&f), tokenRevokeCmd(&f))
	return cmd
}

func tokenCreateCmd(f *apiFlags) *cobra.Command {
	var req auth.TokenRequest
	cmd := &cobra.Command{
		Use:   "create --name NAME --role ROLE",
		Short: "Create a token and print it (the only time it is shown)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var tok auth.NewTokenResponse
			if err := c.Do(cmd.Context(), http.MethodPost, "/v1/tokens", req, &tok); err != nil {
				return fmt.Errorf("create token: %w", err)
			}
			return f.out.print(cmd.OutOrStdout(), tok, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLE\tTOKEN")
				fmt.Fprintf(tw, "%s\t%s\t%s\n", tok.Name, tok.Role, tok.Token)
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Fprintln(cmd.ErrOrStderr(), "Store the token now: the server keeps only its hash and cannot show it again.")
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "token name (letters, digits, '.', '_', '-'; shown in the audit log)")
	cmd.Flags().Var((*roleFlag)(&req.Role), "role", fmt.Sprintf("role, one of %v", auth.Roles()))
	cmd.MarkFlagRequired("name")
	cmd.MarkFlagRequired("role")
	return cmd
}

// roleFlag checks --role before anything is sent.
type roleFlag auth.Role

func (r *roleFlag) String() string { return string(*r) }
func (r *roleFlag) Type() string   { return "role" }
func (r *roleFlag) Set(s string) error {
	if !auth.Role(s).Valid() {
		return fmt.Errorf("want one of %v", auth.Roles())
	}
	*r = roleFlag(s)
	return nil
}

func tokenListCmd(f *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List tokens (names, roles, times; never secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			var ts []auth.TokenInfo
			if err := c.Do(cmd.Context(), http.MethodGet, "/v1/tokens", nil, &ts); err != nil {
				return fmt.Errorf("list tokens: %w", err)
			}
			return f.out.print(cmd.OutOrStdout(), ts, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tREVOKED")
				for _, t := range ts {
					revoked := "-"
					if t.RevokedAt != nil {
						revoked = t.RevokedAt.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Role, t.CreatedAt.Format(time.RFC3339), revoked)
				}
				return tw.Flush()
			})
		},
	}
}

func tokenRevokeCmd(f *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke a token: it stops authenticating at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), http.MethodDelete, "/v1/tokens/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return fmt.Errorf("revoke token: %w", err)
			}
			return f.out.print(cmd.OutOrStdout(), map[string]string{"revoked": args[0]}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "revoked token %s\n", args[0])
				return err
			})
		},
	}
}
