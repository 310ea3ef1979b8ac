// Package servertest is test equipment: it runs a trustpool server inside
// a test's process, on loopback, for the tests of what talks to one.
package servertest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"trustpool/internal/server"
)

// Start runs a server with cfg until the test ends: then its context is
// cancelled, Run's error reported and the server closed. It returns the
// server and that context, and the admin token the server wrote in
// cfg.StateDir.
func Start(t testing.TB, cfg server.Config) (srv *server.Server, ctx context.Context, adminToken string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
		srv.Close()
	})
	tok, err := os.ReadFile(filepath.Join(cfg.StateDir, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return srv, ctx, strings.TrimSpace(string(tok))
}
