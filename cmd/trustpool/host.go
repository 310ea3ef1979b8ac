package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"trustpool/internal/api"
	"trustpool/internal/verdict"
)

// hostCmd shows one host as a person reads it: its verdict, every reason
// (a PCR mismatch names the PCR, the value and the approved ones), and its
// history of levels.
func hostCmd(af *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use: "host NAME", Short: "Show a host: verdict, reasons (what differs) and history", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return showHost(cmd, af, args[0]) },
	}
}

// showHost prints the named host: its HostView document, or printHost's
// view of it.
func showHost(cmd *cobra.Command, af *apiFlags, name string) error {
	c, err := af.client()
	if err != nil {
		return err
	}
	var h api.HostView
	if err := c.Do(cmd.Context(), "GET", "/v1/hosts/"+url.PathEscape(name), nil, &h); err != nil {
		return err
	}
	return af.out.print(cmd.OutOrStdout(), h, func(w io.Writer) error { return printHost(w, h) })
}

func printHost(w io.Writer, h api.HostView) error {
	fmt.Fprintf(w, "%s (%s)\n", h.Name, h.State)
	if v := h.Verdict; v == nil {
		fmt.Fprintln(w, "  never attested")
	} else {
		fmt.Fprintf(w, "  %s since %s, until %s, under %s\n", v.Level, v.VTime, v.Expiry, orNone(v.Policy))
		for _, r := range v.Reasons {
			fmt.Fprintf(w, "  - %s: %s\n", r.Code, r.Message)
		}
	}
	if len(h.History) == 0 {
		return nil
	}
	fmt.Fprintln(w, "history (newest first):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, e := range h.History {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.VTime.UTC().Format(time.RFC3339), e.Level, strings.Join(codesOf(e.Reasons), ", "))
	}
	return tw.Flush()
}

func codesOf(rs []verdict.Reason) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Code)
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "no policy"
	}
	return s
}

// levelChange is one line of `hosts --watch --output json`: a host seen
// for the first time (From empty) or whose level moved.
type levelChange struct {
	Time    time.Time        `json:"time"`
	Host    string           `json:"host_name"`
	From    verdict.Level    `json:"from,omitempty"`
	To      verdict.Level    `json:"to"`
	Reasons []verdict.Reason `json:"reasons"`
}

// watchPool prints the pool, then one line for every host whose level
// changes, polling every interval until ctx ends: tab-separated text, or
// with asJSON one levelChange object a line.
func watchPool(ctx context.Context, c *client, w io.Writer, every time.Duration, asJSON bool) error {
	levels := map[string]verdict.Level{}
	t := time.NewTicker(every)
	defer t.Stop()
	enc := json.NewEncoder(w)
	for {
		var p api.Pool
		if err := c.Do(ctx, "GET", "/v1/pool", nil, &p); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, e := range p.Hosts {
			prev, seen := levels[e.Host]
			levels[e.Host] = e.Level
			if seen && prev == e.Level {
				continue
			}
			ch := levelChange{Time: time.Now().UTC().Truncate(time.Second), Host: e.Host, From: prev, To: e.Level, Reasons: e.Reasons}
			if asJSON {
				if err := enc.Encode(ch); err != nil {
					return err
				}
				continue
			}
			from := string(prev)
			if !seen {
				from = "-"
			}
			fmt.Fprintf(w, "%s\t%s\t%s → %s\t%s\n", ch.Time.Format(time.RFC3339), e.Host, from, e.Level, strings.Join(codesOf(e.Reasons), ", "))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
