package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// testVerdict returns a verdict of host at level established at
// epoch()+minutes; untrusted verdicts carry reasons.
func testVerdict(host string, level verdict.Level, minutes int) verdict.Verdict {
	at := store.Truncate(epoch().Add(time.Duration(minutes) * time.Minute))
	v := verdict.Verdict{Host: host, Level: level, VTime: at, Expiry: at.Add(10 * time.Minute), Policy: "default@3"}
	if level == verdict.Untrusted {
		v.Reasons = []verdict.Reason{
			verdict.PCRReason(verdict.CodePCRMismatch, 18, "sha256", "PCR 18 is 3fa4…, want 91bc…"),
			{Code: verdict.CodeNoReference, Message: "no approved vmm reference", Class: "vmm"},
		}
	}
	return v
}

// testEvidence is a record as the store returns it: ContentHash is the
// SHA-256 of Evidence, which the store computes.
func testEvidence(host, tag string, minutes int) *store.EvidenceRecord {
	ev := []byte(`{"quote":"` + tag + `"}`)
	sum := sha256.Sum256(ev)
	return &store.EvidenceRecord{
		Host:         host,
		ContentHash:  sum[:],
		Evidence:     ev,
		Nonce:        []byte("nonce-" + tag),
		Measurements: []byte(`{"pcrs":"` + tag + `"}`),
		VerifiedAt:   store.Truncate(epoch().Add(time.Duration(minutes) * time.Minute)),
	}
}

// wantLatest fails the test unless the latest verdicts, by host name,
// are want.
func wantLatest(t *testing.T, s *store.Store, want []verdict.Verdict) {
	t.Helper()
	got, err := s.LatestVerdicts(t.Context())
	must(t, "latest", err)
	slices.SortFunc(got, func(a, b verdict.Verdict) int { return strings.Compare(a.Host, b.Host) })
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("latest = %+v\nwant %+v", got, want)
	}
}

// putHosts stores active hosts with the given names, each with its own EK.
func putHosts(t *testing.T, s *store.Store, names ...string) {
	t.Helper()
	for _, name := range names {
		h := testHost(name, 0)
		h.EKPublic = []byte("ek-of-" + name)
		must(t, "put host "+name, s.PutHost(t.Context(), h))
	}
}

func verdictTests() map[string]func(*testing.T, Opener) {
	return map[string]func(*testing.T, Opener){
		"Sequence": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "node1")
			steps := []struct {
				v        verdict.Verdict
				wantPrev verdict.Level
				history  int // history length after the step
			}{
				{testVerdict("node1", verdict.Trusted, 0), verdict.Unknown, 1},
				{testVerdict("node1", verdict.Trusted, 1), verdict.Trusted, 1},
				{testVerdict("node1", verdict.Untrusted, 2), verdict.Trusted, 2},
				{testVerdict("node1", verdict.Untrusted, 3), verdict.Untrusted, 2},
				{testVerdict("node1", verdict.Unknown, 4), verdict.Untrusted, 3},
				{testVerdict("node1", verdict.Trusted, 5), verdict.Unknown, 4},
			}
			for i, st := range steps {
				prev, err := s.PutVerdict(ctx, st.v, nil)
				must(t, "put verdict", err)
				if prev != st.wantPrev {
					t.Errorf("step %d: prev = %q, want %q", i, prev, st.wantPrev)
				}
				latest, err := s.LatestVerdicts(ctx)
				must(t, "latest", err)
				if len(latest) != 1 || !reflect.DeepEqual(latest[0], st.v) {
					t.Fatalf("step %d: latest = %+v\nwant [%+v]", i, latest, st.v)
				}
				h, err := s.History(ctx, "node1", 100)
				must(t, "history", err)
				if len(h) != st.history {
					t.Fatalf("step %d: history has %d entries, want %d", i, len(h), st.history)
				}
			}
			// History holds the verdict that started each level, newest first.
			h, err := s.History(ctx, "node1", 3)
			must(t, "history", err)
			want := []verdict.Verdict{steps[5].v, steps[4].v, steps[2].v}
			if !reflect.DeepEqual(h, want) {
				t.Fatalf("history = %+v\nwant %+v", h, want)
			}
		},
		"FirstVerdictUnknown": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "node1")
			prev, err := s.PutVerdict(ctx, testVerdict("node1", verdict.Unknown, 0), nil)
			must(t, "put", err)
			if prev != verdict.Unknown {
				t.Errorf("prev = %q, want unknown", prev)
			}
			h, err := s.History(ctx, "node1", 10)
			must(t, "history", err)
			if len(h) != 1 {
				t.Fatalf("a first verdict, even unknown, starts the history: got %d entries", len(h))
			}
		},
		"Evidence": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "node1", "node2")
			_, err := s.LatestEvidence(ctx, "node1")
			wantErr(t, "evidence before any", err, store.ErrNotFound)

			ev1 := testEvidence("node1", "one", 0)
			_, err = s.PutVerdict(ctx, testVerdict("node1", verdict.Trusted, 0), ev1)
			must(t, "put with evidence", err)
			// A verdict without verified evidence (agent unreachable) keeps the last evidence.
			_, err = s.PutVerdict(ctx, testVerdict("node1", verdict.Unknown, 1), nil)
			must(t, "put without evidence", err)
			got, err := s.LatestEvidence(ctx, "node1")
			must(t, "latest evidence", err)
			if !reflect.DeepEqual(got, *ev1) {
				t.Fatalf("evidence = %+v\nwant %+v", got, *ev1)
			}
			ev2 := testEvidence("node1", "two", 2)
			_, err = s.PutVerdict(ctx, testVerdict("node1", verdict.Untrusted, 2), ev2)
			must(t, "put with new evidence", err)
			got, err = s.LatestEvidence(ctx, "node1")
			must(t, "latest evidence", err)
			if !reflect.DeepEqual(got, *ev2) {
				t.Fatalf("evidence = %+v\nwant %+v", got, *ev2)
			}
			_, err = s.LatestEvidence(ctx, "node2")
			wantErr(t, "evidence of another host", err, store.ErrNotFound)
		},
		"EvidenceStoredWhenMeasurementsChange": func(t *testing.T, open Opener) {
			// A steady host measures the same at every attestation: its
			// evidence and nonce stay the first of those measurements',
			// its verification time and number follow the latest.
			s, ctx := open(t), t.Context()
			putHosts(t, s, "node1")
			put := func(seq int64, ev *store.EvidenceRecord) {
				t.Helper()
				v := testVerdict("node1", verdict.Trusted, int(seq))
				v.Seq = seq
				_, err := s.PutVerdict(ctx, v, ev)
				must(t, "put", err)
			}
			first := testEvidence("node1", "one", 0)
			put(1, first)
			again := testEvidence("node1", "two", 5) // another quote and nonce
			again.Measurements = first.Measurements
			put(2, again)
			got, err := s.LatestEvidence(ctx, "node1")
			must(t, "latest evidence", err)
			want := *first
			want.VerifiedAt, want.Seq = again.VerifiedAt, 2
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("after the same measurements: %+v\nwant %+v", got, want)
			}
			changed := testEvidence("node1", "three", 9)
			put(3, changed)
			got, err = s.LatestEvidence(ctx, "node1")
			must(t, "latest evidence", err)
			want = *changed
			want.Seq = 3
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("after new measurements: %+v\nwant %+v", got, want)
			}
			later := testEvidence("node1", "four", 12)
			later.Measurements = changed.Measurements
			put(4, later)
			want.VerifiedAt, want.Seq = later.VerifiedAt, 4
			got, err = s.LatestEvidence(ctx, "node1")
			must(t, "latest evidence", err)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("after the same measurements again: %+v\nwant %+v", got, want)
			}
			// A verdict without evidence (the agent unreachable) keeps the
			// latest verification.
			put(5, nil)
			got, err = s.LatestEvidence(ctx, "node1")
			must(t, "latest evidence", err)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("after a verdict without evidence: %+v\nwant %+v", got, want)
			}
			// The re-evaluation reads the latest time and number too.
			must(t, "all measurements", s.AllMeasurements(ctx, func(host string, m []byte, at time.Time, seq int64) error {
				if string(m) != string(changed.Measurements) || !at.Equal(later.VerifiedAt) || seq != 4 {
					t.Errorf("AllMeasurements: %s %q %v %d", host, m, at, seq)
				}
				return nil
			}))
		},
		"Errors": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "node1")
			tests := []struct {
				name string
				v    verdict.Verdict
				ev   *store.EvidenceRecord
				want error
			}{
				{"unknown host", testVerdict("ghost", verdict.Trusted, 0), nil, store.ErrNotFound},
				{"unknown host with evidence", testVerdict("ghost", verdict.Trusted, 0), testEvidence("ghost", "x", 0), store.ErrNotFound},
				{"no host", testVerdict("", verdict.Trusted, 0), nil, store.ErrInvalid},
				{"bad level", testVerdict("node1", "TRUSTED", 0), nil, store.ErrInvalid},
				{"empty level", testVerdict("node1", "", 0), nil, store.ErrInvalid},
				{"evidence of another host", testVerdict("node1", verdict.Trusted, 0), testEvidence("node2", "x", 0), store.ErrInvalid},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					_, err := s.PutVerdict(ctx, tt.v, tt.ev)
					wantErr(t, "put verdict", err, tt.want)
				})
			}
			latest, err := s.LatestVerdicts(ctx)
			must(t, "latest", err)
			if len(latest) != 0 {
				t.Fatalf("refused verdicts were stored: %+v", latest)
			}
			_, err = s.History(ctx, "node1", 0)
			wantErr(t, "history limit 0", err, store.ErrInvalid)
		},
		"ManyHosts": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			names := []string{"a", "b", "c", "d"}
			putHosts(t, s, names...)
			levels := []verdict.Level{verdict.Trusted, verdict.Untrusted, verdict.Unknown, verdict.Trusted}
			var want []verdict.Verdict
			for i, name := range names[:3] { // d has none
				v := testVerdict(name, levels[i], i)
				_, err := s.PutVerdict(ctx, v, nil)
				must(t, "put", err)
				want = append(want, v)
			}
			wantLatest(t, s, want)
			h, err := s.History(ctx, "d", 10)
			must(t, "history of d", err)
			if len(h) != 0 {
				t.Fatalf("history of a host without verdicts: %+v", h)
			}
		},
		"DeleteHostCascades": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "node1", "node2")
			for _, host := range []string{"node1", "node2"} {
				_, err := s.PutVerdict(ctx, testVerdict(host, verdict.Trusted, 0), testEvidence(host, "e", 0))
				must(t, "put", err)
			}
			must(t, "delete", s.DeleteHost(ctx, "node1"))
			latest, err := s.LatestVerdicts(ctx)
			must(t, "latest", err)
			if len(latest) != 1 || latest[0].Host != "node2" {
				t.Fatalf("latest after delete = %+v, want node2's only", latest)
			}
			_, err = s.LatestEvidence(ctx, "node1")
			wantErr(t, "evidence of deleted host", err, store.ErrNotFound)
			// A host enrolled again under the name starts afresh.
			putHosts(t, s, "node1")
			h, err := s.History(ctx, "node1", 10)
			must(t, "history", err)
			if len(h) != 0 {
				t.Fatalf("re-created host inherited %d history entries", len(h))
			}
		},
		"ConcurrentWriters": func(t *testing.T, open Opener) {
			// Writers of one host's verdict race; each reports the level it
			// replaced. With the two levels alternating, a writer that saw
			// another level (or none) appended to the history, so the
			// history must have exactly as many entries as such writers.
			s, ctx := open(t), t.Context()
			putHosts(t, s, "node1")
			const n = 24
			prevs := make([]verdict.Level, n)
			levels := [2]verdict.Level{verdict.Trusted, verdict.Untrusted}
			errs := race(n, func(i int) error {
				var err error
				// One time for all: none expires another, so every change
				// alternates the level.
				prevs[i], err = s.PutVerdict(ctx, testVerdict("node1", levels[i%2], 0), nil)
				return err
			})
			changes := 0
			for i, err := range errs {
				must(t, "put", err)
				if prevs[i] != levels[i%2] {
					changes++
				}
			}
			h, err := s.History(ctx, "node1", 1000)
			must(t, "history", err)
			if len(h) != changes {
				t.Fatalf("history has %d entries, writers reported %d changes", len(h), changes)
			}
			for i := 1; i < len(h); i++ {
				if h[i].Level == h[i-1].Level {
					t.Fatalf("history repeats level %s at %d: %+v", h[i].Level, i, h)
				}
			}
		},
		"Batch": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "a", "b", "c")
			_, err := s.PutVerdict(ctx, testVerdict("a", verdict.Trusted, 0), testEvidence("a", "a", 0))
			must(t, "put a", err)
			_, err = s.PutVerdict(ctx, testVerdict("c", verdict.Trusted, 0), nil)
			must(t, "put c", err)
			batch := []verdict.Verdict{
				testVerdict("a", verdict.Trusted, 1),   // same level: no history
				testVerdict("b", verdict.Untrusted, 1), // first verdict
				testVerdict("ghost", verdict.Trusted, 1),
				testVerdict("c", verdict.Untrusted, 1),
				testVerdict("c", verdict.Trusted, 2), // twice in one batch: both changes kept
			}
			must(t, "put verdicts", putVerdicts(ctx, s, batch))
			wantLatest(t, s, []verdict.Verdict{batch[0], batch[1], batch[4]})
			for host, n := range map[string]int{"a": 1, "b": 1, "c": 3} {
				h, err := s.History(ctx, host, 10)
				must(t, "history", err)
				if len(h) != n {
					t.Errorf("history of %s has %d entries, want %d", host, len(h), n)
				}
			}
			// The batch leaves evidence alone.
			ev, err := s.LatestEvidence(ctx, "a")
			must(t, "evidence", err)
			if !reflect.DeepEqual(ev, *testEvidence("a", "a", 0)) {
				t.Errorf("evidence after batch = %+v", ev)
			}
			must(t, "empty batch", putVerdicts(ctx, s, nil))
			bad := []verdict.Verdict{testVerdict("a", verdict.Untrusted, 5), testVerdict("b", "", 5)}
			wantErr(t, "batch with an invalid verdict", putVerdicts(ctx, s, bad), store.ErrInvalid)
			got, err := s.LatestVerdicts(ctx)
			must(t, "latest", err)
			for _, v := range got {
				if v.Host == "a" && v.Level != verdict.Trusted {
					t.Fatalf("a refused batch was partly written: %+v", v)
				}
			}
		},
		"BatchSkipsLowerSeq": func(t *testing.T, open Opener) {
			// A re-evaluation computed from older evidence (a lower Seq) does
			// not overwrite an attestation recorded meanwhile; alike in a
			// small batch (hosts locked one by one) and a large one (the
			// whole fleet locked at once).
			for _, pad := range []int{0, 300} {
				t.Run(fmt.Sprintf("%d more hosts", pad), func(t *testing.T) {
					s, ctx := open(t), t.Context()
					putHosts(t, s, "a", "b", "c")
					for _, host := range []string{"a", "b"} {
						_, err := s.PutVerdict(ctx, withSeq(testVerdict(host, verdict.Untrusted, 5), 5), nil)
						must(t, "put", err)
					}
					batch := []verdict.Verdict{
						withSeq(testVerdict("a", verdict.Trusted, 6), 4), // lower Seq, later time: skipped
						withSeq(testVerdict("b", verdict.Trusted, 5), 5), // same Seq (re-evaluated): written
						withSeq(testVerdict("c", verdict.Trusted, 1), 1), // first: written
						withSeq(testVerdict("ghost", verdict.Trusted, 9), 9),
					}
					want := []verdict.Verdict{withSeq(testVerdict("a", verdict.Untrusted, 5), 5), batch[1], batch[2]}
					for i := range pad {
						h := fmt.Sprintf("p%03d", i)
						putHosts(t, s, h)
						batch = append(batch, withSeq(testVerdict(h, verdict.Trusted, 1), 1))
						want = append(want, batch[len(batch)-1])
					}
					out, err := s.RecordVerdicts(ctx, records(batch), nil)
					must(t, "record verdicts", err)
					var written []bool
					for _, r := range out[:4] {
						written = append(written, r.Written)
					}
					if want := []bool{false, true, true, false}; !reflect.DeepEqual(written, want) {
						t.Fatalf("written = %v, want %v", written, want)
					}
					if !out[3].Gone {
						t.Errorf("ghost not reported gone")
					}
					wantLatest(t, s, want)
					h, err := s.History(ctx, "a", 10)
					must(t, "history", err)
					if len(h) != 1 {
						t.Fatalf("a skipped verdict reached the history: %+v", h)
					}
				})
			}
		},
		"ClockSteppedBack": func(t *testing.T, open Opener) {
			// The server's clock steps back an hour: a newer attestation
			// (higher Seq) with an earlier time still replaces the verdict.
			s, ctx := open(t), t.Context()
			putHosts(t, s, "node1")
			_, err := s.PutVerdict(ctx, withSeq(testVerdict("node1", verdict.Trusted, 60), 1), nil)
			must(t, "put", err)
			prev, err := s.PutVerdict(ctx, withSeq(testVerdict("node1", verdict.Untrusted, 0), 2), nil)
			must(t, "put after the step", err)
			latest, err := s.LatestVerdicts(ctx)
			must(t, "latest", err)
			if len(latest) != 1 || latest[0].Level != verdict.Untrusted || latest[0].Seq != 2 {
				t.Fatalf("latest = %+v, want the untrusted verdict of Seq 2", latest)
			}
			if prev != verdict.Trusted {
				t.Fatalf("prev = %s, want trusted: the stored verdict had not expired", prev)
			}
		},
		"NextSeq": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "a", "b")
			for want := int64(1); want <= 3; want++ {
				got, err := s.NextSeq(ctx, "a")
				must(t, "next seq", err)
				if got != want {
					t.Fatalf("NextSeq(a) = %d, want %d", got, want)
				}
			}
			if got, err := s.NextSeq(ctx, "b"); err != nil || got != 1 {
				t.Fatalf("NextSeq(b) = %d %v, want 1: numbers are per host", got, err)
			}
			_, err := s.NextSeq(ctx, "ghost")
			wantErr(t, "next seq of no host", err, store.ErrNotFound)
			// NumberAttestation shares the numbering and returns the host,
			// without its EK.
			h, seq, err := s.NumberAttestation(ctx, "a")
			must(t, "number attestation", err)
			if seq != 4 || h.Name != "a" || h.State != store.HostActive {
				t.Fatalf("NumberAttestation(a) = %s %s %d, want a active 4", h.Name, h.State, seq)
			}
			if want, err := s.GetHost(ctx, "a"); err != nil || len(want.EKPublic) == 0 || h.EKPublic != nil || h.EKCert != nil {
				t.Fatalf("NumberAttestation(a) EK = %x %x, want none (GetHost has %x, %v)", h.EKPublic, h.EKCert, want.EKPublic, err)
			} else if want.EKPublic, want.EKCert = nil, nil; !reflect.DeepEqual(h, want) {
				t.Fatalf("NumberAttestation(a) host = %+v, want GetHost's %+v (%v)", h, want, err)
			}
			_, _, err = s.NumberAttestation(ctx, "ghost")
			wantErr(t, "number attestation of no host", err, store.ErrNotFound)
		},
		"Expire": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "a")
			v := withSeq(testVerdict("a", verdict.Trusted, 0), 3)
			_, err := s.PutVerdict(ctx, v, nil)
			must(t, "put", err)
			expired := func(seq int64, at time.Time) store.Record {
				return store.Record{Expire: true, Verdict: verdict.Verdict{Host: "a", Level: verdict.Unknown, VTime: at, Expiry: at, Seq: seq,
					Reasons: []verdict.Reason{{Code: verdict.CodeExpired, Message: "expired"}}}}
			}
			for name, r := range map[string]store.Record{
				"before the expiry":  expired(3, v.Expiry.Add(-time.Second)),
				"of another verdict": expired(2, v.Expiry),
				"of a later verdict": expired(4, v.Expiry),
			} {
				out, err := s.RecordVerdicts(ctx, []store.Record{r}, nil)
				must(t, "expire "+name, err)
				if out[0].Written {
					t.Errorf("expiry %s was written", name)
				}
			}
			out, err := s.RecordVerdicts(ctx, []store.Record{expired(3, v.Expiry)}, nil)
			must(t, "expire", err)
			if !out[0].Written || !out[0].Changed || out[0].Prev != verdict.Trusted {
				t.Fatalf("expiry: %+v, want written, a change from trusted", out[0])
			}
			out, err = s.RecordVerdicts(ctx, []store.Record{expired(3, v.Expiry.Add(time.Second))}, nil)
			must(t, "expire twice", err)
			if out[0].Written {
				t.Error("an expired verdict expired twice")
			}
		},
		"Transitions": func(t *testing.T, open Opener) {
			// A level change and its audit entry and outbox rows commit
			// together; a transition that cannot be written takes the
			// verdict with it.
			s, ctx := open(t), t.Context()
			putHosts(t, s, "a")
			var calls []verdict.Level
			then := func(v verdict.Verdict, prev verdict.Level) store.Transition {
				calls = append(calls, prev, v.Level)
				return store.Transition{
					Audit:         &store.Entry{Time: v.VTime, Actor: "system", Action: "verdict.change", Subject: v.Host},
					Notifications: []store.Notification{{Target: "https://hook.example/", Body: []byte(v.Level), CreatedAt: v.VTime}},
				}
			}
			for i, l := range []verdict.Level{verdict.Trusted, verdict.Trusted, verdict.Untrusted} {
				_, err := s.RecordVerdicts(ctx, []store.Record{{Verdict: withSeq(testVerdict("a", l, i), int64(i+1))}}, then)
				must(t, "record", err)
			}
			if want := []verdict.Level{verdict.Unknown, verdict.Trusted, verdict.Trusted, verdict.Untrusted}; !reflect.DeepEqual(calls, want) {
				t.Fatalf("transitions %v, want %v", calls, want)
			}
			audit, err := s.ListAudit(ctx, 0, 100)
			must(t, "audit", err)
			due, err := s.Due(ctx, epoch().Add(time.Hour), time.Minute, 100)
			must(t, "due", err)
			if len(audit) != 2 || len(due) != 2 {
				t.Fatalf("%d audit entries and %d notifications, want 2 and 2", len(audit), len(due))
			}
			bad := func(v verdict.Verdict, prev verdict.Level) store.Transition {
				return store.Transition{Audit: &store.Entry{Subject: v.Host}} // no time, actor or action
			}
			_, err = s.RecordVerdicts(ctx, []store.Record{{Verdict: withSeq(testVerdict("a", verdict.Trusted, 5), 9)}}, bad)
			wantErr(t, "record with a transition that cannot be written", err, store.ErrInvalid)
			latest, err := s.LatestVerdicts(ctx)
			must(t, "latest", err)
			if latest[0].Level != verdict.Untrusted {
				t.Fatalf("the verdict of a failed transition was written: %+v", latest[0])
			}
		},
		"RemoveHost": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "a", "b")
			_, err := s.PutVerdict(ctx, testVerdict("a", verdict.Trusted, 0), nil)
			must(t, "put", err)
			gone := verdict.Verdict{Host: "a", Level: verdict.Unknown, VTime: epoch().Add(time.Minute), Reasons: []verdict.Reason{{Code: verdict.CodeDeleted, Message: "deleted"}}}
			then := func(v verdict.Verdict, prev verdict.Level) store.Transition {
				return store.Transition{
					Audit:         &store.Entry{Time: v.VTime, Actor: "admin", Action: "host.delete", Subject: v.Host},
					Notifications: []store.Notification{{Target: "https://hook.example/", CreatedAt: v.VTime}},
				}
			}
			prev, err := s.RemoveHost(ctx, gone, then)
			must(t, "remove", err)
			if prev != verdict.Trusted {
				t.Fatalf("prev = %s, want trusted", prev)
			}
			if _, err := s.GetHost(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("host still there: %v", err)
			}
			audit, _ := s.ListAudit(ctx, 0, 10)
			due, _ := s.Due(ctx, epoch().Add(time.Hour), time.Minute, 10)
			if len(audit) != 1 || len(due) != 1 {
				t.Fatalf("%d audit entries, %d notifications: want 1 and 1", len(audit), len(due))
			}
			_, err = s.RemoveHost(ctx, verdict.Verdict{Host: "a", VTime: epoch()}, then)
			wantErr(t, "remove twice", err, store.ErrNotFound)
			_, err = s.RemoveHost(ctx, verdict.Verdict{Host: "b", VTime: epoch()}, then)
			must(t, "remove a host without a verdict", err)
			if due, _ := s.Due(ctx, epoch().Add(2*time.Hour), time.Minute, 10); len(due) != 1 {
				t.Fatalf("%d notifications in the outbox, want a's only: b was unknown anyway", len(due))
			}
		},
		"BatchRacesSingle": func(t *testing.T, open Opener) {
			// Batches and single writes of the same hosts interleave without
			// corrupting the history: levels alternate in every host's history.
			s, ctx := open(t), t.Context()
			hosts := []string{"a", "b", "c"}
			putHosts(t, s, hosts...)
			levels := [2]verdict.Level{verdict.Trusted, verdict.Untrusted}
			errs := race(12, func(i int) error {
				if i%3 == 0 {
					var vs []verdict.Verdict
					for _, h := range hosts {
						vs = append(vs, testVerdict(h, levels[i%2], 0))
					}
					return putVerdicts(ctx, s, vs)
				}
				_, err := s.PutVerdict(ctx, testVerdict(hosts[i%3], levels[i%2], 0), nil)
				return err
			})
			for _, err := range errs {
				must(t, "put", err)
			}
			for _, host := range hosts {
				h, err := s.History(ctx, host, 100)
				must(t, "history", err)
				for i := 1; i < len(h); i++ {
					if h[i].Level == h[i-1].Level {
						t.Fatalf("history of %s repeats %s: %+v", host, h[i].Level, h)
					}
				}
			}
		},
		"AllMeasurements": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			putHosts(t, s, "a", "b", "c")
			for i, host := range []string{"a", "b"} {
				_, err := s.PutVerdict(ctx, testVerdict(host, verdict.Trusted, i), testEvidence(host, host, i))
				must(t, "put", err)
			}
			got := map[string]string{}
			must(t, "all", s.AllMeasurements(ctx, func(host string, m []byte, at time.Time, _ int64) error {
				want := testEvidence(host, host, 0)
				if host == "b" {
					want = testEvidence(host, host, 1)
				}
				if !at.Equal(want.VerifiedAt) {
					t.Errorf("%s verified at %v, want %v", host, at, want.VerifiedAt)
				}
				got[host] = string(m)
				return nil
			}))
			want := map[string]string{"a": `{"pcrs":"a"}`, "b": `{"pcrs":"b"}`}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("measurements = %v, want %v", got, want)
			}
			stop := errors.New("stop")
			calls := 0
			err := s.AllMeasurements(ctx, func(string, []byte, time.Time, int64) error { calls++; return stop })
			if !errors.Is(err, stop) || calls != 1 {
				t.Fatalf("callback error: got %v after %d calls, want stop after 1", err, calls)
			}
		},
	}
}

// putVerdicts records vs in one batch, for tests that only look at the error.
func putVerdicts(ctx context.Context, s *store.Store, vs []verdict.Verdict) error {
	_, err := s.RecordVerdicts(ctx, records(vs), nil)
	return err
}

func records(vs []verdict.Verdict) []store.Record {
	out := make([]store.Record, len(vs))
	for i, v := range vs {
		out[i] = store.Record{Verdict: v}
	}
	return out
}

func withSeq(v verdict.Verdict, seq int64) verdict.Verdict {
	v.Seq = seq
	return v
}
