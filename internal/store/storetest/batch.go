package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

func batchTests() map[string]func(*testing.T, Opener) {
	return map[string]func(*testing.T, Opener){
		// A batch larger than one statement's rows (a re-evaluation of the
		// fleet) writes every verdict, history row, audit entry and outbox
		// row, in the batch's order, with the audit chain intact; a host
		// named twice within one statement's rows keeps its later verdict.
		"ManyStatements": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			const n = 300
			var hosts []string
			for i := range n {
				hosts = append(hosts, fmt.Sprintf("h%03d", i))
			}
			putHosts(t, s, hosts...)
			// One entry before the batch: the batch's chain goes on from it.
			must(t, "append", s.Append(ctx, store.Entry{Time: epoch(), Actor: "admin", Action: "test.start"}))
			then := func(v verdict.Verdict, prev verdict.Level) store.Transition {
				return store.Transition{
					Audit:         &store.Entry{Time: v.VTime, Actor: "system", Action: "verdict.change", Subject: v.Host},
					Notifications: []store.Notification{{Target: "https://hook.example/", Body: []byte(v.Host + " " + string(v.Level)), CreatedAt: v.VTime}},
					Trait:         &store.TraitChange{Host: v.Host, CreatedAt: v.VTime},
				}
			}
			var recs []store.Record
			for i, h := range hosts {
				recs = append(recs, store.Record{Verdict: withSeq(testVerdict(h, verdict.Trusted, 1), int64(i+1))})
			}
			// h000 again, untrusted and later, among the first statement's rows.
			again := withSeq(testVerdict("h000", verdict.Untrusted, 2), n+1)
			recs = slices.Insert(recs, 50, store.Record{Verdict: again})
			out, err := s.RecordVerdicts(ctx, recs, then)
			must(t, "record", err)
			for i, r := range out {
				if !r.Written || !r.Changed {
					t.Fatalf("record %d (%s): %+v, want written and changed", i, recs[i].Verdict.Host, r)
				}
			}

			latest, err := s.LatestVerdicts(ctx)
			must(t, "latest", err)
			if len(latest) != n {
				t.Fatalf("%d verdicts, want %d", len(latest), n)
			}
			for _, v := range latest {
				want := withSeq(testVerdict(v.Host, verdict.Trusted, 1), v.Seq)
				if v.Host == "h000" {
					want = again
				}
				if v.Level != want.Level || v.Seq != want.Seq || !v.VTime.Equal(want.VTime) {
					t.Fatalf("verdict of %s: %+v, want %+v", v.Host, v, want)
				}
			}
			for host, want := range map[string]int{"h000": 2, "h001": 1, "h299": 1} {
				h, err := s.History(ctx, host, 10)
				must(t, "history", err)
				if len(h) != want {
					t.Errorf("history of %s: %d rows, want %d", host, len(h), want)
				}
			}

			audit, err := s.ListAudit(ctx, 0, 1000)
			must(t, "audit", err)
			if err := store.VerifyChain(audit); err != nil {
				t.Fatalf("audit chain: %v", err)
			}
			if len(audit) != len(recs)+1 {
				t.Fatalf("%d audit entries, want %d", len(audit), len(recs)+1)
			}
			for i, r := range recs {
				if got := audit[i+1].Subject; got != r.Verdict.Host {
					t.Fatalf("audit entry %d is of %s, want %s (the batch's order)", i+2, got, r.Verdict.Host)
				}
			}
			seq, head, err := s.AuditHead(ctx)
			must(t, "head", err)
			if last := audit[len(audit)-1]; seq != last.Seq || string(head) != string(last.Hash) {
				t.Fatalf("head %d is not the last entry %d", seq, last.Seq)
			}

			due, err := s.Due(ctx, epoch().Add(time.Hour), time.Minute, 1000)
			must(t, "due", err)
			if len(due) != len(recs) {
				t.Fatalf("%d notifications, want %d", len(due), len(recs))
			}
			for i, r := range recs {
				if want := r.Verdict.Host + " " + string(r.Verdict.Level); string(due[i].Body) != want {
					t.Fatalf("notification %d is %q, want %q (IDs in the batch's order)", i, due[i].Body, want)
				}
			}
			if d, err := s.OutboxDepth(ctx); err != nil || d.Traits != n {
				t.Fatalf("trait outbox %+v, %v; want one row a host (%d)", d, err, n)
			}
		},
	}
}
