package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"trustpool/internal/auth"
	"trustpool/internal/store"
)

// auditCmd is `trustpool audit`: read and verify the tamper-evident log.
func auditCmd(out *output) *cobra.Command {
	f := apiFlags{out: out}
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read and verify the hash-chained audit log (needs a reader or admin token)",
	}
	f.register(cmd)
	cmd.AddCommand(auditVerifyCmd(&f), auditListCmd(&f))
	return cmd
}

func auditVerifyCmd(f *apiFlags) *cobra.Command {
	var (
		page int
		head string
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that no audit entry was changed, removed or reordered",
		Long: `verify fetches the whole audit log page by page and recomputes its hash
chain. A changed, removed or reordered entry breaks the chain from there on;
an entry cut from the end shows against the head the database records.

Whoever can write the database can also rewrite the whole chain and its head.
To detect that, keep the head this command prints somewhere else and pass it
back later with --head: the log must still contain that entry, unchanged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var recorded *auditHead
			if head != "" {
				h, err := parseAuditHead(head)
				if err != nil {
					return err
				}
				recorded = &h
			}
			c, err := f.client()
			if err != nil {
				return err
			}
			rep, err := verifyAudit(cmd.Context(), c, page, recorded)
			if err != nil {
				return err
			}
			doc := map[string]any{"intact": true, "entries": rep.entries, "head": rep.head.String()}
			return f.out.print(cmd.OutOrStdout(), doc, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "audit log intact: %d entries\nhead: %s\n", rep.entries, rep.head)
				return err
			})
		},
	}
	cmd.Flags().IntVar(&page, "page", auth.MaxAuditPage, "entries fetched per request")
	cmd.Flags().StringVar(&head, "head", "", "a head printed by an earlier verify (SEQ:HASH) that the log must still hold")
	return cmd
}

func auditListCmd(f *apiFlags) *cobra.Command {
	var (
		after int64
		limit int
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List audit entries in order",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.client()
			if err != nil {
				return err
			}
			es, err := c.auditEntries(cmd.Context(), after, limit)
			if err != nil {
				return err
			}
			return f.out.print(cmd.OutOrStdout(), es, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tSUBJECT\tDETAIL")
				for _, e := range es {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format(time.RFC3339), e.Actor, e.Action, e.Subject, oneLine(e.Detail))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().Int64Var(&after, "after", 0, "list entries after this sequence number")
	cmd.Flags().IntVar(&limit, "limit", 50, fmt.Sprintf("entries to list (at most %d)", auth.MaxAuditPage))
	return cmd
}

// oneLine shows a JSON detail on one table line, escaping what a terminal
// would interpret: the log holds what clients sent.
func oneLine(detail []byte) string {
	b := bytes.Join(bytes.Fields(detail), []byte(" "))
	var s strings.Builder
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&s, `\x%02x`, b[0])
		case !unicode.IsPrint(r):
			q := strconv.QuoteRune(r)
			s.WriteString(q[1 : len(q)-1])
		default:
			s.WriteRune(r)
		}
		b = b[n:]
	}
	return s.String()
}

// auditEntries fetches one page of the audit log.
func (c *client) auditEntries(ctx context.Context, after int64, limit int) ([]auth.AuditEntry, error) {
	var es []auth.AuditEntry
	if err := c.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/audit?after=%d&limit=%d", after, limit), nil, &es); err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return es, nil
}

func (c *client) auditPage(ctx context.Context, after int64, limit int) ([]store.Entry, error) {
	es, err := c.auditEntries(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]store.Entry, len(es))
	for i, e := range es {
		out[i] = e.Entry()
	}
	return out, nil
}

func (c *client) auditHead(ctx context.Context) (auditHead, error) {
	var h auth.AuditHeadResponse
	if err := c.Do(ctx, http.MethodGet, "/v1/audit/head", nil, &h); err != nil {
		return auditHead{}, fmt.Errorf("read audit head: %w", err)
	}
	return auditHead{Seq: h.Seq, Hash: h.Hash}, nil
}

// auditSource is where verifyAudit reads the log.
type auditSource interface {
	auditPage(ctx context.Context, after int64, limit int) ([]store.Entry, error)
	auditHead(ctx context.Context) (auditHead, error)
}

// auditHead names the newest entry of a chain, which vouches for all the
// entries before it.
type auditHead struct {
	Seq  int64
	Hash []byte
}

func (h auditHead) String() string { return fmt.Sprintf("%d:%x", h.Seq, h.Hash) }

// parseAuditHead reads the SEQ:HASH form that String writes.
func parseAuditHead(s string) (auditHead, error) {
	seq, hx, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok || err != nil || n < 1 {
		return auditHead{}, fmt.Errorf("--head %q: want SEQ:HASH as printed by audit verify", s)
	}
	hash, err := hex.DecodeString(hx)
	if err != nil || len(hash) != 32 {
		return auditHead{}, fmt.Errorf("--head %q: want a 64-digit hex SHA-256 after the colon", s)
	}
	return auditHead{Seq: n, Hash: hash}, nil
}

// auditReport is the outcome of a successful verification.
type auditReport struct {
	entries int64
	head    auditHead // the last entry verified
}

// auditBreak is the first break found in the audit log.
type auditBreak struct {
	Seq   int64
	Fault store.ChainFault
	Entry *store.Entry // what stands at the break, when there is an entry
	Why   string
}

func (b *auditBreak) Error() string {
	var s strings.Builder
	fmt.Fprintf(&s, "audit log broken: entry %d %s: %s", b.Seq, b.Fault, b.Why)
	if e := b.Entry; e != nil {
		fmt.Fprintf(&s, "\n  found: seq %d, %s, actor %q, action %q, subject %q, detail %q",
			e.Seq, e.Time.Format(time.RFC3339Nano), e.Actor, e.Action, e.Subject, e.Detail)
	}
	return s.String()
}

// verifyAudit reads the whole log from src in pages of pageSize and checks
// its hash chain, then that it reaches the head the database records (an
// entry cut from the end) and, when recorded is set, that it still holds
// that head unchanged (a chain rewritten since). The first problem is an
// *auditBreak.
func verifyAudit(ctx context.Context, src auditSource, pageSize int, recorded *auditHead) (auditReport, error) {
	if pageSize < 1 || pageSize > auth.MaxAuditPage {
		return auditReport{}, fmt.Errorf("page size %d: want 1 to %d", pageSize, auth.MaxAuditPage)
	}
	// The head is read first: entries appended while we read only add to
	// the chain, so it must reach at least this far.
	dbHead, err := src.auditHead(ctx)
	if err != nil {
		return auditReport{}, err
	}
	var (
		last    store.Entry // the last verified entry; Seq 0 before the first page
		atHead  []byte      // hash of the entry at dbHead.Seq
		atRec   []byte      // hash of the entry at recorded.Seq
		entries int64
	)
	for {
		page, err := src.auditPage(ctx, last.Seq, pageSize)
		if err != nil {
			return auditReport{}, err
		}
		if last.Seq == 0 {
			err = store.VerifyChain(page)
		} else {
			err = store.VerifyChainAfter(last, page)
		}
		if ce, ok := errors.AsType[*store.ChainError](err); ok {
			return auditReport{}, chainBreak(ce, page, last.Seq)
		}
		if err != nil {
			return auditReport{}, fmt.Errorf("verify audit log: %w", err)
		}
		for _, e := range page {
			if e.Seq == dbHead.Seq {
				atHead = e.Hash
			}
			if recorded != nil && e.Seq == recorded.Seq {
				atRec = e.Hash
			}
		}
		entries += int64(len(page))
		if len(page) > 0 {
			last = page[len(page)-1]
		}
		if len(page) < pageSize {
			break
		}
	}
	switch {
	case dbHead.Seq > last.Seq:
		return auditReport{}, &auditBreak{Seq: last.Seq + 1, Fault: store.FaultRemoved,
			Why: fmt.Sprintf("the log ends at entry %d but the database's head is entry %d: entries were cut from the end", last.Seq, dbHead.Seq)}
	case dbHead.Seq > 0 && !bytes.Equal(atHead, dbHead.Hash):
		return auditReport{}, &auditBreak{Seq: dbHead.Seq, Fault: store.FaultChanged,
			Why: "the entry does not match the head the database records"}
	}
	if recorded != nil {
		switch {
		case recorded.Seq > last.Seq:
			return auditReport{}, &auditBreak{Seq: last.Seq + 1, Fault: store.FaultRemoved,
				Why: fmt.Sprintf("the log ends at entry %d, before the recorded head %s: entries were cut from the end and the head rewound", last.Seq, recorded)}
		case !bytes.Equal(atRec, recorded.Hash):
			return auditReport{}, &auditBreak{Seq: recorded.Seq, Fault: store.FaultChanged,
				Why: fmt.Sprintf("the chain no longer holds the recorded head %s: it was rewritten", recorded)}
		}
	}
	return auditReport{entries: entries, head: auditHead{Seq: last.Seq, Hash: last.Hash}}, nil
}

// chainBreak explains a ChainError found in page (which followed entry
// after).
func chainBreak(ce *store.ChainError, page []store.Entry, after int64) *auditBreak {
	b := &auditBreak{Seq: ce.Seq, Fault: ce.Fault}
	if ce.Index >= 0 && ce.Index < len(page) {
		e := page[ce.Index]
		b.Entry = &e
	}
	switch ce.Fault {
	case store.FaultChanged:
		b.Why = "its hash does not match its content and the entry before it"
	case store.FaultRemoved:
		prev := after
		if ce.Index > 0 && ce.Index <= len(page) {
			prev = page[ce.Index-1].Seq
		}
		b.Why = fmt.Sprintf("entry %d is missing after entry %d", ce.Seq, prev)
	case store.FaultReordered:
		b.Why = "entries are out of sequence order or repeated"
	}
	return b
}
