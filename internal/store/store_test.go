package store_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"trustpool/internal/store"
	"trustpool/internal/store/storetest"
)

// openSQLite opens a new SQLite store in the test's temporary directory.
func openSQLite(t *testing.T) *store.Store {
	t.Helper()
	return openSQLiteAt(t, filepath.Join(t.TempDir(), "trustpool.db"))
}

func openSQLiteAt(t testing.TB, path string) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), "sqlite:"+path)
	if err != nil {
		t.Fatalf("open SQLite store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func TestSQLiteConformance(t *testing.T) {
	storetest.Run(t, openSQLite)
}

func TestOpenRejectsDSN(t *testing.T) {
	for _, dsn := range []string{
		"",
		"/var/lib/trustpool.db",
		"sqlite:",
		"sqlite::memory:",
		"sqlite:file:x.db",
		"sqlite:/tmp/x.db?_pragma=foreign_keys(0)",
		"mysql://localhost/trustpool",
	} {
		t.Run(dsn, func(t *testing.T) {
			s, err := store.Open(t.Context(), dsn)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", dsn)
			}
			if !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("Open(%q) = %v, want ErrInvalid", dsn, err)
			}
		})
	}
}

// TestSQLiteReopen checks that data survives a restart and that opening a
// migrated database again applies nothing twice.
func TestSQLiteReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trustpool.db")
	ctx := t.Context()
	s, err := store.Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutHost(ctx, store.Host{Name: "node1", State: store.HostActive}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openSQLiteAt(t, path)
	if _, err := s.GetHost(ctx, "node1"); err != nil {
		t.Fatalf("host lost across reopen: %v", err)
	}
}

// TestSQLiteTwoStoresOneFile races two Stores (as two processes would) on
// one file: SQLite's file lock, not the write pool, must serialise them.
func TestSQLiteTwoStoresOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trustpool.db")
	a, b := openSQLiteAt(t, path), openSQLiteAt(t, path)
	ctx := t.Context()
	now := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	hash := []byte("0123456789abcdef0123456789abcdef")
	if err := a.CreateJoinToken(ctx, store.JoinToken{Hash: hash, Host: "n", ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	for i := range 16 {
		s := a
		if i%2 == 1 {
			s = b
		}
		go func() { errs <- s.ConsumeJoinToken(ctx, hash, "n", now) }()
	}
	won := 0
	for range 16 {
		switch err := <-errs; {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrTokenUsed):
			t.Errorf("loser: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d consumers won, want 1", won)
	}
}
