package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"text/tabwriter"

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
			// The bundle is a JSON document whatever --output says; on
			// standard output it is all there is.
			if out == "" || out == "-" {
				_, err := cmd.OutOrStdout().Write(doc)
				return err
			}
			if err := os.WriteFile(out, doc, 0o644); err != nil {
				return fmt.Errorf("write bundle: %w", err)
			}
			sum := sha256.Sum256(doc)
			rep := exportReport{Host: b.Host, File: out, Bytes: len(doc), SHA256: hex.EncodeToString(sum[:]), PCRs: b.Evidence.PCRs}
			return af.out.print(cmd.OutOrStdout(), rep, func(w io.Writer) error {
				fmt.Fprintf(w, "wrote the evidence of %s to %s (%d bytes, sha256 %s)\ncheck it with: trustpool verify --bundle %s\n", rep.Host, out, rep.Bytes, rep.SHA256, out)
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "BANK\tPCR\tQUOTED DIGEST")
				for _, p := range rep.PCRs {
					fmt.Fprintf(tw, "%s\t%d\t%x\n", p.Bank, p.Index, p.Digest)
				}
				return tw.Flush()
			})
		},
	}
	export.Flags().StringVarP(&out, "out", "o", "", "file to write the bundle to (default: standard output, the bundle alone)")
	cmd.AddCommand(export)
	return cmd
}

// exportReport is what `evidence export --out FILE` prints: the file
// written and the PCRs the bundle's quote covers.
type exportReport struct {
	Host   string         `json:"host"`
	File   string         `json:"file"`
	Bytes  int            `json:"bytes"`
	SHA256 string         `json:"sha256"` // of the file
	PCRs   []evidence.PCR `json:"pcrs"`
}
