package storetest

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

func testPending(host, ek, poll string, created time.Time) store.Pending {
	return store.Pending{
		PollHash: []byte("poll-" + poll), Host: host, EKPublic: []byte(ek), AKPublic: []byte("ak"), AKName: []byte("ak-name"),
		URL: "https://" + host + ":9443", CSR: []byte("csr"), Source: "192.0.2.1",
		CreatedAt: store.Truncate(created), ExpiresAt: store.Truncate(created.Add(time.Hour)),
	}
}

func admissionTests() map[string]func(*testing.T, Opener) {
	return map[string]func(*testing.T, Opener){
		"AdmitOneNameOneEK": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			h := testHost("node1", 1)
			h.EKPublic = []byte("ek-a")
			must(t, "admit", s.AdmitHost(ctx, store.Admission{Host: h, Now: epoch()}))
			// The same TPM again: its AK and certificate are replaced, its
			// settings kept.
			again := h
			again.AKPublic, again.AgentCert, again.Policy = []byte("new ak"), []byte("new cert"), "other"
			must(t, "re-admit", s.AdmitHost(ctx, store.Admission{Host: again, Now: epoch()}))
			got, err := s.GetHost(ctx, "node1")
			must(t, "get", err)
			if !bytes.Equal(got.AgentCert, []byte("new cert")) || !bytes.Equal(got.AKPublic, []byte("new ak")) || got.Policy != h.Policy {
				t.Fatalf("after re-admission %+v", got)
			}
			other := h
			other.EKPublic = []byte("ek-b")
			wantErr(t, "another EK under node1", s.AdmitHost(ctx, store.Admission{Host: other, Now: epoch()}), store.ErrConflict)
			elsewhere := testHost("node2", 2)
			elsewhere.EKPublic = []byte("ek-a")
			wantErr(t, "node1's EK under node2", s.AdmitHost(ctx, store.Admission{Host: elsewhere, Now: epoch()}), store.ErrConflict)
			if got, _ := s.GetHost(ctx, "node1"); !bytes.Equal(got.EKPublic, []byte("ek-a")) {
				t.Fatal("a refused admission changed node1")
			}
		},
		"ReadmissionWithAnotherAKDropsEvidence": func(t *testing.T, open Opener) {
			// Evidence is stored in full only when measurements change, so
			// evidence quoted by a replaced AK must not outlive it.
			s, ctx := open(t), t.Context()
			h := testHost("node1", 1)
			must(t, "admit", s.AdmitHost(ctx, store.Admission{Host: h, Now: epoch()}))
			ev := testEvidence("node1", "one", 0)
			_, err := s.PutVerdict(ctx, testVerdict("node1", verdict.Trusted, 0), ev)
			must(t, "put", err)
			must(t, "re-admit, same AK", s.AdmitHost(ctx, store.Admission{Host: h, Now: epoch()}))
			if _, err := s.LatestEvidence(ctx, "node1"); err != nil {
				t.Fatalf("evidence after a re-admission with the same AK: %v", err)
			}
			other := h
			other.EKPublic = []byte("another TPM")
			wantErr(t, "another EK", s.AdmitHost(ctx, store.Admission{Host: other, Now: epoch()}), store.ErrConflict)
			if _, err := s.LatestEvidence(ctx, "node1"); err != nil {
				t.Fatalf("evidence after a refused admission: %v", err)
			}
			newAK := h
			newAK.AKPublic = []byte("new ak")
			must(t, "re-admit, new AK", s.AdmitHost(ctx, store.Admission{Host: newAK, Now: epoch()}))
			_, err = s.LatestEvidence(ctx, "node1")
			wantErr(t, "evidence of the replaced AK", err, store.ErrNotFound)
			// The next attestation, measuring the same, is stored in full.
			next := testEvidence("node1", "two", 1)
			next.Measurements = ev.Measurements
			_, err = s.PutVerdict(ctx, testVerdict("node1", verdict.Trusted, 1), next)
			must(t, "put", err)
			got, err := s.LatestEvidence(ctx, "node1")
			must(t, "latest evidence", err)
			if !bytes.Equal(got.Evidence, next.Evidence) || !bytes.Equal(got.Nonce, next.Nonce) {
				t.Fatalf("evidence under the new AK: %+v", got)
			}
		},
		"AdmitRace": func(t *testing.T, open Opener) {
			// Two TPMs admitted under one new name at once: one wins.
			s, ctx := open(t), t.Context()
			errs := race(8, func(i int) error {
				h := testHost("node1", i)
				h.EKPublic = []byte{byte(i)}
				return s.AdmitHost(ctx, store.Admission{Host: h, Now: epoch()})
			})
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, store.ErrConflict):
					t.Fatalf("admit: %v", err)
				}
			}
			if won != 1 {
				t.Fatalf("%d admissions of one name with different EKs succeeded, want 1", won)
			}
		},
		"AdmitConsumesTokenOrNothing": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			tok := store.JoinToken{Hash: []byte("token"), Host: "node1", ExpiresAt: epoch().Add(time.Hour), CreatedAt: epoch()}
			must(t, "token", s.CreateJoinToken(ctx, tok))
			must(t, "check token", s.CheckJoinToken(ctx, tok.Hash, "node1", epoch()))
			wantErr(t, "check for another host", s.CheckJoinToken(ctx, tok.Hash, "node2", epoch()), store.ErrTokenHost)
			taken := testHost("node1", 1)
			taken.EKPublic = []byte("ek-a")
			must(t, "admit", s.AdmitHost(ctx, store.Admission{Host: taken, Now: epoch()}))
			rival := taken
			rival.EKPublic = []byte("ek-b")
			wantErr(t, "admit another EK with the token", s.AdmitHost(ctx, store.Admission{Host: rival, TokenHash: tok.Hash, Now: epoch()}), store.ErrConflict)
			must(t, "the token survives a failed admission", s.CheckJoinToken(ctx, tok.Hash, "node1", epoch()))
			must(t, "delete", s.DeleteHost(ctx, "node1"))
			must(t, "admit with the token", s.AdmitHost(ctx, store.Admission{Host: rival, TokenHash: tok.Hash, Now: epoch()}))
			wantErr(t, "check a used token", s.CheckJoinToken(ctx, tok.Hash, "node1", epoch()), store.ErrTokenUsed)
		},
		"Pending": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			a := testPending("node1", "ek-a", "a", epoch())
			b := testPending("node1", "ek-b", "b", epoch().Add(time.Second))
			must(t, "put a", s.PutPending(ctx, a))
			must(t, "put b", s.PutPending(ctx, b))
			// The same TPM asking again replaces its request.
			a2 := testPending("node1", "ek-a", "a2", epoch().Add(2*time.Second))
			must(t, "put a again", s.PutPending(ctx, a2))
			ps, err := s.ListPending(ctx, epoch())
			must(t, "list", err)
			if len(ps) != 2 || !bytes.Equal(ps[0].PollHash, b.PollHash) || !bytes.Equal(ps[1].PollHash, a2.PollHash) {
				t.Fatalf("pending = %+v, want b then a2", ps)
			}
			if n, err := s.CountWaiting(ctx, epoch()); err != nil || n != 2 {
				t.Fatalf("waiting = %d %v, want 2", n, err)
			}
			got, err := s.GetPending(ctx, "node1", store.EKHash([]byte("ek-b")), epoch())
			must(t, "get b", err)
			if !bytes.Equal(got.PollHash, b.PollHash) || got.Source != b.Source {
				t.Fatalf("get b = %+v", got)
			}
			_, err = s.PollPending(ctx, a.PollHash, epoch())
			wantErr(t, "poll with the replaced secret", err, store.ErrNotFound)
			// Approve b: the host is admitted, b gets the certificate, a2 goes.
			h := testHost("node1", 1)
			h.EKPublic, h.AgentCert = []byte("ek-b"), []byte("cert")
			must(t, "admit b", s.AdmitHost(ctx, store.Admission{Host: h, PendingPoll: b.PollHash, Now: epoch()}))
			if ps, _ := s.ListPending(ctx, epoch()); len(ps) != 0 {
				t.Fatalf("after the approval %d requests still wait", len(ps))
			}
			_, err = s.PollPending(ctx, a2.PollHash, epoch())
			wantErr(t, "poll of the rival", err, store.ErrNotFound)
			got, err = s.PollPending(ctx, b.PollHash, epoch())
			must(t, "poll b", err)
			if !bytes.Equal(got.Cert, []byte("cert")) {
				t.Fatalf("poll b = %+v, want the certificate", got)
			}
			_, err = s.PollPending(ctx, b.PollHash, epoch())
			wantErr(t, "poll b twice", err, store.ErrNotFound)
		},
		"PendingExpires": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			must(t, "put", s.PutPending(ctx, testPending("node1", "ek-a", "a", epoch())))
			must(t, "enrollment", s.CreateEnrollment(ctx, store.Enrollment{ID: "e1", Host: "node2", URL: "https://node2", ExpiresAt: epoch().Add(5 * time.Minute), CreatedAt: epoch()}))
			later := epoch().Add(time.Hour)
			if ps, _ := s.ListPending(ctx, later); len(ps) != 0 {
				t.Fatalf("expired requests listed: %+v", ps)
			}
			if n, _ := s.CountWaiting(ctx, later); n != 0 {
				t.Fatalf("%d expired rows counted as waiting", n)
			}
			n, err := s.DeleteExpiredEnrollments(ctx, later)
			must(t, "delete expired", err)
			if n != 2 {
				t.Fatalf("deleted %d, want the enrollment and the pending request", n)
			}
		},
		"SetHostPolicyKeepsIdentity": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			h := testHost("node1", 1)
			must(t, "put", s.PutHost(ctx, h))
			must(t, "set policy", s.SetHostPolicy(ctx, "node1", "gold", map[string]string{"rack": "b"}, epoch()))
			got, err := s.GetHost(ctx, "node1")
			must(t, "get", err)
			if got.Policy != "gold" || got.Labels["rack"] != "b" || !bytes.Equal(got.AgentCert, h.AgentCert) || !slices.Equal(got.EKPublic, h.EKPublic) {
				t.Fatalf("after SetHostPolicy %+v", got)
			}
			wantErr(t, "no such host", s.SetHostPolicy(ctx, "ghost", "gold", nil, epoch()), store.ErrNotFound)
		},
	}
}
