package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"trustpool/internal/api"
	"trustpool/internal/policy"
)

// readDoc reads a JSON document from a file, or standard input for "-".
func readDoc(path string, v any) error {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	dec := json.NewDecoder(io.LimitReader(r, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func referenceCmd(af *apiFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "reference", Short: "List, add and retire known-good references"}
	cmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List the references in force", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			var refs []*policy.Reference
			if err := c.Do(cmd.Context(), "GET", "/v1/references", nil, &refs); err != nil {
				return err
			}
			return af.out.print(cmd.OutOrStdout(), refs, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVERSION\tCLASS\tPCRS\tMETA")
				for _, r := range refs {
					var pcrs []string
					for _, e := range r.Expect {
						pcrs = append(pcrs, fmt.Sprintf("%d/%s", e.PCR, e.Bank))
					}
					fmt.Fprintf(tw, "%s\tv%d\t%s\t%s\t%s\n", r.Name, r.Version, r.Class, strings.Join(pcrs, ","), meta(r.Meta))
				}
				return tw.Flush()
			})
		},
	})
	var file string
	put := &cobra.Command{
		Use: "put NAME -f FILE", Short: "Add a new version of a reference (JSON; - for stdin)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r policy.Reference
			if err := readDoc(file, &r); err != nil {
				return err
			}
			if r.Name == "" {
				r.Name = args[0]
			}
			return sendChange(cmd, af, "PUT", "/v1/references/"+args[0], &r)
		},
	}
	put.Flags().StringVarP(&file, "file", "f", "-", "reference document")
	cmd.AddCommand(put, &cobra.Command{
		Use: "retire NAME", Short: "Retire a reference (hosts matching only it stop being trusted)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return sendChange(cmd, af, "DELETE", "/v1/references/"+args[0], nil)
		},
	})
	return cmd
}

func policyCmd(af *apiFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Show and change trust-pool policies"}
	cmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List the policies in force", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			var ps []*policy.Policy
			if err := c.Do(cmd.Context(), "GET", "/v1/policies", nil, &ps); err != nil {
				return err
			}
			return af.out.print(cmd.OutOrStdout(), ps, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVERSION\tREQUIRES\tAPPROVED\tSELECTOR")
				for _, p := range ps {
					var req, appr []string
					for _, c := range p.Require {
						req = append(req, string(c))
						appr = append(appr, fmt.Sprintf("%s=%s", c, strings.Join(p.Approved[c], "|")))
					}
					fmt.Fprintf(tw, "%s\tv%d\t%s\t%s\t%s\n", p.Name, p.Version, strings.Join(req, ","), strings.Join(appr, " "), meta(p.Selector))
				}
				return tw.Flush()
			})
		},
	})
	var file string
	put := &cobra.Command{
		Use: "put NAME -f FILE", Short: "Add a new version of a policy (JSON; - for stdin)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var p policy.Policy
			if err := readDoc(file, &p); err != nil {
				return err
			}
			if p.Name == "" {
				p.Name = args[0]
			}
			return sendChange(cmd, af, "PUT", "/v1/policies/"+args[0], &p)
		},
	}
	put.Flags().StringVarP(&file, "file", "f", "-", "policy document")
	cmd.AddCommand(put)
	return cmd
}

func changeCmds(af *apiFlags) []*cobra.Command {
	var (
		file string
		req  api.GoldenRequest
	)
	preview := &cobra.Command{
		Use: "preview -f CHANGE", Short: "Show which hosts a known-good change would move, without applying it", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var c policy.Change
			if err := readDoc(file, &c); err != nil {
				return err
			}
			return sendChange(cmd, af, "POST", "/v1/preview", &c)
		},
	}
	apply := &cobra.Command{
		Use: "apply -f CHANGE", Short: "Apply a known-good change: {\"references\":[…],\"policies\":[…],\"retire\":[…]}", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var c policy.Change
			if err := readDoc(file, &c); err != nil {
				return err
			}
			return sendChange(cmd, af, "POST", "/v1/apply", &c)
		},
	}
	for _, c := range []*cobra.Command{preview, apply} {
		c.Flags().StringVarP(&file, "file", "f", "-", "change document")
	}
	golden := &cobra.Command{
		Use: "golden HOST", Short: "Make a known-good host's latest verified measurements references and approve them", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Host = args[0]
			return sendChange(cmd, af, "POST", "/v1/golden", &req)
		},
	}
	golden.Flags().StringVar(&req.Name, "name", "", "reference name prefix (default: the host name)")
	golden.Flags().StringVar(&req.Policy, "policy", "", "policy to approve them in (default: default)")
	golden.Flags().StringToStringVar(&req.Meta, "meta", nil, "descriptive metadata, e.g. bios_version=2.3,hypervisor=kvm-6.8")
	golden.Flags().BoolVar(&req.Preview, "preview", false, "only show which hosts would change")
	return []*cobra.Command{preview, apply, golden}
}

// sendChange sends a known-good change (or a preview, or a golden import)
// and prints the hosts it moves. The server evaluates every host's stored
// evidence before it answers; while it does, the time waited is shown as
// progress.
func sendChange(cmd *cobra.Command, af *apiFlags, method, path string, body any) error {
	c, err := af.client()
	if err != nil {
		return err
	}
	var res api.ChangeResult
	err = waiting(cmd.Context(), af.out.progressTo(cmd.ErrOrStderr()), "waiting for the server's evaluation of every host, s", time.Second, func(ctx context.Context) error {
		return c.Do(ctx, method, path, body, &res)
	})
	if err != nil {
		return err
	}
	return af.out.print(cmd.OutOrStdout(), res, func(w io.Writer) error { return changeTable(w, res) })
}

// changeTable is a change's result for people: what it added, then the
// hosts it moves.
func changeTable(w io.Writer, res api.ChangeResult) error {
	for _, r := range res.References {
		fmt.Fprintf(w, "reference %s v%d (%s)\n", r.Name, r.Version, r.Class)
	}
	for _, p := range res.Policies {
		fmt.Fprintf(w, "policy %s v%d\n", p.Name, p.Version)
	}
	if len(res.Changes) == 0 {
		_, err := fmt.Fprintln(w, "no host changes level")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tFROM\tTO\tREASON")
	for _, ch := range res.Changes {
		var rs []string
		for _, r := range ch.Reasons {
			rs = append(rs, r.Message)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ch.Host, ch.From, ch.To, strings.Join(rs, "; "))
	}
	return tw.Flush()
}

// waiting runs do, reporting to p (nil: nothing) how many times every has
// passed while it runs: one request the server takes long to answer.
func waiting(ctx context.Context, p *progress, what string, every time.Duration, do func(context.Context) error) error {
	if p == nil {
		return do(ctx)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for s := 1; ; s++ {
			select {
			case <-done:
				return
			case <-t.C:
				p.Report(what, s, 0)
			}
		}
	})
	err := do(ctx)
	close(done)
	wg.Wait()
	p.Done()
	return err
}

func meta(m map[string]string) string {
	var kv []string
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}
