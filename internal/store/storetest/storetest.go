// Package storetest is the conformance suite of package store: one set of
// tests that every engine must pass. The store's own tests run it against
// SQLite always and against a private PostgreSQL cluster in the
// integration test, so both engines are held to the same behaviour.
package storetest

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"trustpool/internal/store"
)

// Opener returns a new, empty store for one test and arranges (t.Cleanup)
// for it to be closed and removed.
type Opener func(t *testing.T) *store.Store

// Run runs every conformance test, each in its own subtest with its own
// store from open.
func Run(t *testing.T, open Opener) {
	groups := []struct {
		name  string
		tests func() map[string]func(*testing.T, Opener)
	}{
		{"Hosts", hostTests},
		{"Admission", admissionTests},
		{"Enrollments", enrollmentTests},
		{"JoinTokens", joinTokenTests},
		{"Verdicts", verdictTests},
		{"KnownGood", knownGoodTests},
		{"Audit", auditTests},
		{"Outbox", outboxTests},
		{"TraitOutbox", traitTests},
		{"Batches", batchTests},
		{"APITokens", apiTokenTests},
		{"Leases", leaseTests},
	}
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			tests := g.tests()
			for _, name := range slices.Sorted(maps.Keys(tests)) {
				t.Run(name, func(t *testing.T) { tests[name](t, open) })
			}
		})
	}
}

// epoch is the suite's clock: every time is derived from it, never from the
// wall clock. The nanoseconds check that the store truncates consistently.
func epoch() time.Time { return time.Date(2026, 11, 3, 14, 5, 6, 789123456, time.UTC) }

// wantErr fails the test unless err matches want (nil: no error).
func wantErr(t *testing.T, op string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("%s: unexpected error %v", op, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: error %v, want %v", op, err, want)
	}
}

// sorted returns a sorted copy of names (nil for none).
func sorted(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	return slices.Sorted(slices.Values(names))
}

// must fails the test on err.
func must(t *testing.T, op string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}
