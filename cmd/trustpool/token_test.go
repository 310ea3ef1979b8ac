package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"trustpool/internal/auth"
)

func TestTokenCommands(t *testing.T) {
	a := newTestAPI(t)

	out, err := a.run(t, "token", "create", "--name", "nova-sched", "--role", "scheduler")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME ROLE TOKEN" {
		t.Fatalf("create printed:\n%s", out)
	}
	fields := strings.Fields(lines[1])
	if len(fields) != 3 || fields[0] != "nova-sched" || fields[1] != "scheduler" {
		t.Fatalf("create printed:\n%s", out)
	}
	secret := fields[2]
	if stored, err := a.store.TokenByHash(context.Background(), auth.HashToken(secret)); err != nil || stored.Name != "nova-sched" {
		t.Fatalf("printed token does not match the stored hash: %+v %v", stored, err)
	}

	out, err = a.run(t, "token", "create", "--name", "viewer", "--role", "reader", "--json")
	var created auth.NewTokenResponse
	if err != nil || json.Unmarshal([]byte(out), &created) != nil || created.Role != auth.RoleReader || created.Token == "" {
		t.Fatalf("create --json: %q, %v", out, err)
	}

	tests := []struct {
		name    string
		args    []string
		wantErr string // "" for success
		wantOut []string
	}{
		{"unknown role is refused locally", []string{"create", "--name", "x", "--role", "root"}, "want one of", nil},
		{"name is required", []string{"create", "--role", "reader"}, `"name" not set`, nil},
		{"server refuses a bad name", []string{"create", "--name", "a b", "--role", "reader"}, "token name", nil},
		{"server refuses a duplicate", []string{"create", "--name", "viewer", "--role", "reader"}, "exists", nil},
		{"list", []string{"list"}, "", []string{"NAME", "nova-sched  scheduler", "viewer      reader"}},
		{"revoke", []string{"revoke", "viewer"}, "", []string{"revoked token viewer"}},
		{"revoke unknown", []string{"revoke", "nobody"}, `no token "nobody"`, nil},
		{"revoke needs a name", []string{"revoke"}, "accepts 1 arg", nil},
		{"list shows the revocation", []string{"list"}, "", []string{"viewer      reader     20"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := a.run(t, append([]string{"token"}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, secret) || strings.Contains(out, created.Token) {
				t.Errorf("output shows a secret:\n%s", out)
			}
		})
	}

	out, err = a.run(t, "token", "list", "--json")
	var infos []auth.TokenInfo
	if err != nil || json.Unmarshal([]byte(out), &infos) != nil || len(infos) != 2 || infos[1].RevokedAt == nil || infos[0].RevokedAt != nil {
		t.Fatalf("list --json: %q, %v", out, err)
	}

	// The revoked reader token no longer reads; a token of the wrong role is
	// refused with the server's message.
	t.Setenv("TRUSTPOOL_TOKEN", created.Token)
	if _, err := a.client(t).auditEntries(context.Background(), 0, 1); err == nil || !strings.Contains(err.Error(), "bearer token is required") {
		t.Fatalf("revoked token: %v", err)
	}
	t.Setenv("TRUSTPOOL_TOKEN", secret)
	if _, err := a.client(t).auditEntries(context.Background(), 0, 1); err == nil || !strings.Contains(err.Error(), "role scheduler may not") {
		t.Fatalf("scheduler token reading the audit log: %v", err)
	}
}
