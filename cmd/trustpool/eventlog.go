package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
)

// Exit codes of the offline checks (eventlog replay, verify --bundle).
const (
	exitOK       = 0 // everything compared or verified
	exitMismatch = 1 // a value differs, or the evidence does not verify
	exitBadInput = 2 // the input could not be read or parsed
)

// exitWith ends the process with code when it is not zero. The offline
// checks print their own report and then exit with a code scripts can test;
// their run functions return the code, so tests call those instead.
func exitWith(code int) error {
	if code != exitOK {
		os.Exit(code)
	}
	return nil
}

// eventlogCmd is `trustpool eventlog`: offline tools over TCG event logs.
func eventlogCmd(out *output) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "eventlog",
		Short: "Offline tools for TCG event logs (no server, no TPM)",
	}
	cmd.AddCommand(eventlogReplayCmd(out))
	return cmd
}

type replayOptions struct {
	log, pcrs  string
	drtm, json bool
}

func eventlogReplayCmd(out *output) *cobra.Command {
	var o replayOptions
	cmd := &cobra.Command{
		Use:   "replay --log FILE [--pcrs FILE] [--json]",
		Short: "Replay a binary TCG event log and compare it with PCR values",
		Long: `replay parses a binary TCG event log (crypto-agile or SHA-1 format, e.g.
/sys/kernel/security/tpm0/binary_bios_measurements), replays it and prints each
PCR it extends, per bank, with the events that built it.

With --pcrs it compares the replay with PCR values read from the TPM: a JSON
file {"sha256":{"0":"hex",...},"sha1":{...}} or the output of tpm2_pcrread.
Every given PCR the log extends is compared, and PCRs 0-7 always.

Exit status: 0 when every compared PCR matches (or nothing was compared),
1 when one differs or cannot be replayed, 2 when the log or the PCR file
cannot be read or parsed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.json = out.JSON()
			return exitWith(runReplay(o, cmd.OutOrStdout(), cmd.ErrOrStderr()))
		},
	}
	cmd.Flags().StringVar(&o.log, "log", "", "binary event log file (required)")
	cmd.Flags().StringVar(&o.pcrs, "pcrs", "", "PCR values to compare with: JSON or tpm2_pcrread output")
	cmd.Flags().BoolVar(&o.drtm, "drtm", false, "the log is an Intel TXT DRTM log: PCRs 17-22 start at zero")
	_ = cmd.MarkFlagRequired("log")
	return cmd
}

// pcrReport is one PCR of one bank in the JSON report.
type pcrReport struct {
	Replayed string `json:"replayed,omitempty"`
	Expected string `json:"expected,omitempty"`
	Match    *bool  `json:"match,omitempty"`
}

// replayReport is what `eventlog replay --json` prints.
type replayReport struct {
	Format string                                  `json:"format"`
	PCRs   map[evidence.Bank]map[string]*pcrReport `json:"pcrs"`
	Events int                                     `json:"events"`
	Errors []string                                `json:"errors"`
}

// runReplay is `eventlog replay`; it returns the exit code.
func runReplay(o replayOptions, stdout, stderr io.Writer) int {
	bad := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "trustpool eventlog replay: "+format+"\n", args...)
		return exitBadInput
	}
	raw, err := os.ReadFile(o.log)
	if err != nil {
		return bad("%v", err)
	}
	l, err := eventlog.Parse(raw)
	if err != nil {
		return bad("%s: %v", o.log, err)
	}
	var expected map[evidence.Bank]map[int][]byte
	if o.pcrs != "" {
		b, err := os.ReadFile(o.pcrs)
		if err != nil {
			return bad("%v", err)
		}
		if expected, err = parsePCRFile(b); err != nil {
			return bad("%s: %v", o.pcrs, err)
		}
	}

	rep := replayReport{Format: l.Format.String(), PCRs: map[evidence.Bank]map[string]*pcrReport{}, Events: len(l.Events), Errors: []string{}}
	var text bytes.Buffer
	fmt.Fprintf(&text, "%s event log, %d events, banks %v\n", l.Format, len(l.Events), l.Banks)
	code := exitOK
	replays := map[evidence.Bank]eventlog.Replayed{}
	for _, bank := range l.Banks {
		r, err := l.ReplayBank(bank, o.drtm)
		if err != nil {
			return bad("%s: %v", o.log, err)
		}
		replays[bank] = r
		m := map[string]*pcrReport{}
		rep.PCRs[bank] = m
		for p := range evidence.NumPCRs {
			if !r.Extended[p] {
				continue
			}
			fmt.Fprintf(&text, "\n%s PCR %d", bank, p)
			if g := r.Gap[p]; g >= 0 {
				msg := fmt.Sprintf("PCR %d (%s) cannot be replayed: event %d carries no %s digest", p, bank, g, bank)
				rep.Errors = append(rep.Errors, msg)
				fmt.Fprintf(&text, ": cannot be replayed, event %d carries no %s digest\n", g, bank)
				m[strconv.Itoa(p)] = &pcrReport{}
			} else {
				fmt.Fprintf(&text, " = %x\n", r.Values[p])
				m[strconv.Itoa(p)] = &pcrReport{Replayed: hex.EncodeToString(r.Values[p])}
			}
			for _, e := range l.Events {
				if e.Type == eventlog.EvNoAction || e.PCR != p {
					continue
				}
				d := "(no digest)"
				if v := e.Digest(bank); v != nil {
					d = hex.EncodeToString(v)
				}
				fmt.Fprintf(&text, "  %4d %-32s %s %s\n", e.Index, eventlog.TypeName(e.Type), d, describe(e.Data))
			}
		}
	}

	if expected != nil {
		fmt.Fprintf(&text, "\ncomparison with %s:\n", o.pcrs)
		for _, bank := range evidence.Banks {
			want, ok := expected[bank]
			if !ok {
				continue
			}
			r, ok := replays[bank]
			if !ok {
				msg := fmt.Sprintf("the %s event log records no %s digests: no %s PCR can be compared", l.Format, bank, bank)
				rep.Errors = append(rep.Errors, msg)
				fmt.Fprintf(&text, "  %s\n", msg)
				code = exitMismatch
				continue
			}
			m := rep.PCRs[bank]
			for p := range evidence.NumPCRs {
				exp, given := want[p]
				if !(given && r.Extended[p]) && p > 7 {
					continue
				}
				pr := m[strconv.Itoa(p)]
				if pr == nil {
					pr = &pcrReport{Replayed: hex.EncodeToString(r.Values[p])}
					m[strconv.Itoa(p)] = pr
				}
				match := false
				switch {
				case !given:
					msg := fmt.Sprintf("PCR %d (%s) is not in %s", p, bank, o.pcrs)
					rep.Errors = append(rep.Errors, msg)
					fmt.Fprintf(&text, "  %-6s PCR %2d  mismatch: %s\n", bank, p, msg)
				case r.Gap[p] >= 0:
					pr.Expected = hex.EncodeToString(exp)
					fmt.Fprintf(&text, "  %-6s PCR %2d  mismatch: event %d carries no %s digest, expected %x\n", bank, p, r.Gap[p], bank, exp)
				default:
					pr.Expected = hex.EncodeToString(exp)
					match = bytes.Equal(r.Values[p], exp)
					if match {
						fmt.Fprintf(&text, "  %-6s PCR %2d  match     %x\n", bank, p, exp)
					} else {
						fmt.Fprintf(&text, "  %-6s PCR %2d  mismatch: replayed %x, expected %x\n", bank, p, r.Values[p], exp)
					}
				}
				pr.Match = &match
				if !match {
					code = exitMismatch
				}
			}
		}
	}

	if o.json {
		if err := printJSON(stdout, rep); err != nil {
			return bad("%v", err)
		}
	} else {
		_, _ = stdout.Write(text.Bytes())
	}
	return code
}

// parsePCRFile reads PCR values: JSON {"sha256":{"0":"hex",...},...}, or
// the YAML tpm2_pcrread prints:
//
//	sha256:
//	  0 : 0x3D458CFE...
func parsePCRFile(b []byte) (map[evidence.Bank]map[int][]byte, error) {
	out := map[evidence.Bank]map[int][]byte{}
	add := func(bank evidence.Bank, idx, value string) error {
		if bank.Size() == 0 {
			return fmt.Errorf("unknown PCR bank %q", bank)
		}
		p, err := strconv.Atoi(strings.TrimSpace(idx))
		if err != nil || p < 0 || p >= evidence.NumPCRs {
			return fmt.Errorf("%s: PCR index %q, want 0 to %d", bank, idx, evidence.NumPCRs-1)
		}
		value = strings.TrimSpace(value)
		value = strings.TrimPrefix(strings.TrimPrefix(value, "0x"), "0X")
		v, err := hex.DecodeString(value)
		if err != nil || len(v) != bank.Size() {
			return fmt.Errorf("%s PCR %d: %q is not %d bytes of hex", bank, p, value, bank.Size())
		}
		if out[bank] == nil {
			out[bank] = map[int][]byte{}
		}
		if _, dup := out[bank][p]; dup {
			return fmt.Errorf("%s PCR %d given twice", bank, p)
		}
		out[bank][p] = v
		return nil
	}
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		var doc map[evidence.Bank]map[string]string
		d := json.NewDecoder(bytes.NewReader(b))
		if err := d.Decode(&doc); err != nil {
			return nil, fmt.Errorf("PCR file: %w", err)
		}
		for _, bank := range slices.Sorted(maps.Keys(doc)) {
			for _, idx := range slices.Sorted(maps.Keys(doc[bank])) {
				if err := add(bank, idx, doc[bank][idx]); err != nil {
					return nil, fmt.Errorf("PCR file: %w", err)
				}
			}
		}
	} else {
		var bank evidence.Bank
		sc := bufio.NewScanner(bytes.NewReader(b))
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if k, ok := strings.CutSuffix(line, ":"); ok {
				bank = evidence.Bank(strings.ToLower(strings.TrimSpace(k)))
				if bank.Size() == 0 {
					return nil, fmt.Errorf("PCR file line %d: unknown PCR bank %q", n, k)
				}
				continue
			}
			idx, value, ok := strings.Cut(line, ":")
			if !ok || bank == "" {
				return nil, fmt.Errorf("PCR file line %d: %q is neither a bank (sha256:) nor a PCR (0 : 0x...)", n, line)
			}
			if err := add(bank, idx, value); err != nil {
				return nil, fmt.Errorf("PCR file line %d: %w", n, err)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("PCR file: %w", err)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("PCR file holds no PCR values")
	}
	return out, nil
}

// describe renders untrusted event data for people: text (ASCII or the
// UTF-16LE that UEFI writes) quoted and cut at 60 characters, anything else
// as its length.
func describe(data []byte) string {
	const max = 60
	text := func(b []byte, step int) (string, bool) {
		var sb strings.Builder
		for i := 0; i+step <= len(b); i += step {
			c := b[i]
			if step == 2 && b[i+1] != 0 {
				return "", false
			}
			if c == 0 && i+step >= len(b)-step { // a trailing NUL (or two)
				continue
			}
			if c < 0x20 || c > 0x7e {
				return "", false
			}
			if sb.Len() < max {
				sb.WriteByte(c)
			}
		}
		return sb.String(), sb.Len() > 0
	}
	if len(data) == 0 {
		return ""
	}
	if s, ok := text(data, 1); ok {
		return strconv.Quote(s)
	}
	if len(data)%2 == 0 {
		if s, ok := text(data, 2); ok {
			return strconv.Quote(s)
		}
	}
	return fmt.Sprintf("(%d bytes)", len(data))
}
