package storetest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"trustpool/internal/store"
)

func testEnrollment(id string) store.Enrollment {
	at := store.Truncate(epoch())
	return store.Enrollment{
		ID:         id,
		Host:       "node1",
		EKPublic:   []byte("ek"),
		EKCert:     []byte("ek-cert"),
		AKPublic:   []byte("ak"),
		AKName:     []byte("ak-name"),
		URL:        "https://node1:9443",
		CSR:        []byte("csr"),
		SecretHash: []byte("secret-hash"),
		TokenHash:  []byte("token-hash"),
		ExpiresAt:  at.Add(5 * time.Minute),
		CreatedAt:  at,
	}
}

func enrollmentTests() map[string]func(*testing.T, Opener) {
	return map[string]func(*testing.T, Opener){
		"TakeOnce": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			want := testEnrollment("e1")
			must(t, "create", s.CreateEnrollment(ctx, want))
			must(t, "create other", s.CreateEnrollment(ctx, testEnrollment("e2")))
			got, err := s.TakeEnrollment(ctx, "e1")
			must(t, "take", err)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("take = %+v\nwant %+v", got, want)
			}
			_, err = s.TakeEnrollment(ctx, "e1")
			wantErr(t, "take again", err, store.ErrNotFound)
			if _, err := s.TakeEnrollment(ctx, "e2"); err != nil {
				t.Fatalf("taking e1 disturbed e2: %v", err)
			}
		},
		"Errors": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			_, err := s.TakeEnrollment(ctx, "never")
			wantErr(t, "take unknown", err, store.ErrNotFound)
			must(t, "create", s.CreateEnrollment(ctx, testEnrollment("e1")))
			wantErr(t, "create duplicate ID", s.CreateEnrollment(ctx, testEnrollment("e1")), store.ErrConflict)
			noID := testEnrollment("")
			wantErr(t, "create without ID", s.CreateEnrollment(ctx, noID), store.ErrInvalid)
			noHost := testEnrollment("e3")
			noHost.Host = ""
			wantErr(t, "create without host", s.CreateEnrollment(ctx, noHost), store.ErrInvalid)
		},
		"DeleteExpired": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			for i, ttl := range []time.Duration{time.Minute, 2 * time.Minute, 3 * time.Minute} {
				e := testEnrollment(fmt.Sprint("e", i))
				e.ExpiresAt = epoch().Add(ttl)
				must(t, "create", s.CreateEnrollment(ctx, e))
			}
			n, err := s.DeleteExpiredEnrollments(ctx, epoch().Add(2*time.Minute))
			must(t, "delete expired", err)
			if n != 2 {
				t.Fatalf("deleted %d, want 2 (expiry at now counts as expired)", n)
			}
			if _, err := s.TakeEnrollment(ctx, "e2"); err != nil {
				t.Fatalf("unexpired enrollment gone: %v", err)
			}
		},
		"ConcurrentTake": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			must(t, "create", s.CreateEnrollment(ctx, testEnrollment("e1")))
			errs := race(16, func(int) error {
				_, err := s.TakeEnrollment(ctx, "e1")
				return err
			})
			if won := countNil(t, errs, store.ErrNotFound); won != 1 {
				t.Fatalf("%d takers got the enrollment, want exactly 1", won)
			}
		},
	}
}

func tokenHash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func joinTokenTests() map[string]func(*testing.T, Opener) {
	return map[string]func(*testing.T, Opener){
		"Consume": func(t *testing.T, open Opener) {
			now := epoch()
			tests := []struct {
				name  string
				token store.JoinToken
				hash  []byte
				host  string
				want  error
			}{
				{"valid", store.JoinToken{Host: "node1", ExpiresAt: now.Add(time.Hour)}, nil, "node1", nil},
				{"unknown", store.JoinToken{Host: "node1", ExpiresAt: now.Add(time.Hour)}, tokenHash("other"), "node1", store.ErrNotFound},
				{"other host", store.JoinToken{Host: "node1", ExpiresAt: now.Add(time.Hour)}, nil, "node2", store.ErrTokenHost},
				{"used", store.JoinToken{Host: "node1", ExpiresAt: now.Add(time.Hour), UsedAt: now.Add(-time.Minute)}, nil, "node1", store.ErrTokenUsed},
				{"expired", store.JoinToken{Host: "node1", ExpiresAt: now.Add(-time.Microsecond)}, nil, "node1", store.ErrTokenExpired},
				{"expires now", store.JoinToken{Host: "node1", ExpiresAt: now}, nil, "node1", store.ErrTokenExpired},
				{"used and expired", store.JoinToken{Host: "node1", ExpiresAt: now.Add(-time.Hour), UsedAt: now.Add(-2 * time.Hour)}, nil, "node1", store.ErrTokenUsed},
				{"other host and used", store.JoinToken{Host: "node1", ExpiresAt: now.Add(time.Hour), UsedAt: now}, nil, "node2", store.ErrTokenHost},
			}
			s, ctx := open(t), t.Context()
			for i, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					tok := tt.token
					tok.Hash = tokenHash(fmt.Sprint("token-", i))
					tok.CreatedAt = now.Add(-time.Hour)
					must(t, "create", s.CreateJoinToken(ctx, tok))
					hash := tt.hash
					if hash == nil {
						hash = tok.Hash
					}
					wantErr(t, "consume", s.ConsumeJoinToken(ctx, hash, tt.host, now), tt.want)
					if tt.want == nil {
						wantErr(t, "consume twice", s.ConsumeJoinToken(ctx, hash, tt.host, now), store.ErrTokenUsed)
					}
				})
			}
		},
		"Create": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			tok := store.JoinToken{Hash: tokenHash("t"), Host: "node1", ExpiresAt: epoch().Add(time.Hour), CreatedAt: epoch()}
			must(t, "create", s.CreateJoinToken(ctx, tok))
			wantErr(t, "create duplicate", s.CreateJoinToken(ctx, tok), store.ErrConflict)
			wantErr(t, "create without hash", s.CreateJoinToken(ctx, store.JoinToken{Host: "n"}), store.ErrInvalid)
			wantErr(t, "create without host", s.CreateJoinToken(ctx, store.JoinToken{Hash: tokenHash("u")}), store.ErrInvalid)
		},
		"ConcurrentConsume": func(t *testing.T, open Opener) {
			s, ctx := open(t), t.Context()
			tok := store.JoinToken{Hash: tokenHash("t"), Host: "node1", ExpiresAt: epoch().Add(time.Hour), CreatedAt: epoch()}
			must(t, "create", s.CreateJoinToken(ctx, tok))
			errs := race(16, func(int) error { return s.ConsumeJoinToken(ctx, tok.Hash, "node1", epoch()) })
			if won := countNil(t, errs, store.ErrTokenUsed); won != 1 {
				t.Fatalf("%d consumers succeeded, want exactly 1", won)
			}
		},
	}
}

// race runs f(0..n-1) in n goroutines released together and returns their
// errors.
func race(n int, f func(i int) error) []error {
	errs := make([]error, n)
	var start, done sync.WaitGroup
	start.Add(1)
	for i := range n {
		done.Go(func() {
			start.Wait()
			errs[i] = f(i)
		})
	}
	start.Done()
	done.Wait()
	return errs
}

// countNil counts the nil errors and fails the test on any error other than
// loser, the one the losers of a race must get.
func countNil(t *testing.T, errs []error, loser error) int {
	t.Helper()
	n := 0
	for _, err := range errs {
		switch {
		case err == nil:
			n++
		case !errors.Is(err, loser):
			t.Errorf("loser got %v, want %v", err, loser)
		}
	}
	return n
}
