package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"

	"github.com/spf13/cobra"

	"trustpool/internal/evidence"
)

// evidenceCmd is `trustpool evidence export HOST [--out FILE]`: the host's
// latest verified attestation, as the bundle `trustpool verify --bundle`
// reads, so that a verdict can be reproduced offline.
func evidenceCmd(af *apiFlags) *cobra.Command {
	cmd := &cobra.Command{Use: "evidence", Short: "Attestation evidence the server keeps", Args: cobra.NoArgs}
	var out string
	export := &cobra.Command{
		Use:   "export HOST [--out FILE]",
		Short: "Write the host's latest verified attestation as a bundle for trustpool verify --bundle",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := af.client()
			if err != nil {
				return err
			}
			// A bundle is the evidence document plus the AK and nonce.
			c.MaxAnswer = evidence.MaxBody + 64<<10
			var raw json.RawMessage
			if err := c.Do(cmd.Context(), "GET", "/v1/hosts/"+url.PathEscape(args[0])+"/evidence", nil, &raw); err != nil {
				return err
			}
			// What the server sent must be a bundle verify --bundle reads.
			b, err := evidence.DecodeBundle(bytes.NewReader(raw))
			if err != nil {
				return fmt.Errorf("evidence of %s: %w", args[0], err)
			}
			doc, err := json.MarshalIndent(b, "", "  ")
			if err != nil {
				return err
			}
			doc = append(doc, '\n')
			if out == "" || out == "-" {
				_, err := cmd.OutOrStdout().Write(doc)
				return err
			}
			if err := os.WriteFile(out, doc, 0o644); err != nil {
				return fmt.Errorf("write bundle: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote the evidence of %s to %s (check it with: trustpool verify --bundle %s)\n", b.Host, out, out)
			return nil
		},
	}
	export.Flags().StringVarP(&out, "out", "o", "", "file to write the bundle to (default: standard output)")
	cmd.AddCommand(export)
	return cmd
}
