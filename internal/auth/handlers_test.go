package auth_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the driver under store's SQLite engine, for raw reads

	"trustpool/internal/auth"
	"trustpool/internal/store"
)

// apiServer mounts the token and audit handlers as the server does.
type apiServer struct {
	store *store.Store
	path  string // the SQLite file
	clock *clock
	srv   *httptest.Server
}

func newAPIServer(t *testing.T, ts auth.TokenStore) *apiServer {
	t.Helper()
	s, path := openStore(t)
	if ts == nil {
		ts = s
	}
	c := newClock()
	a := auth.New(auth.Config{Store: s, Bootstrap: bootstrap, Now: c.Now})
	mux := http.NewServeMux()
	tokens := a.Require(auth.RoleAdmin)(auth.TokensHandler(ts, c.Now, slog.New(slog.NewTextHandler(t.Output(), nil))))
	mux.Handle("/v1/tokens", tokens)
	mux.Handle("/v1/tokens/", tokens)
	audit := a.Require(auth.RoleReader)(auth.AuditHandler(s, nil))
	mux.Handle("/v1/audit", audit)
	mux.Handle("/v1/audit/", audit)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &apiServer{store: s, path: path, clock: c, srv: srv}
}

// call sends body (a string sent as is) with token and returns status,
// headers and body.
func (a *apiServer) call(t *testing.T, token, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// create makes a token through the API and returns its secret.
func (a *apiServer) create(t *testing.T, name string, role auth.Role) string {
	t.Helper()
	body, _ := json.Marshal(auth.TokenRequest{Name: name, Role: role})
	code, _, b := a.call(t, bootstrap, "POST", "/v1/tokens", string(body))
	if code != http.StatusCreated {
		t.Fatalf("create %s: %d %s", name, code, b)
	}
	var got auth.NewTokenResponse
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	return got.Token
}

func TestTokensAPI(t *testing.T) {
	a := newAPIServer(t, nil)
	reader := a.create(t, "viewer", auth.RoleReader)

	tests := []struct {
		name     string
		token    string
		method   string
		path     string
		body     string
		want     int
		contains string // in the body
	}{
		{"create", bootstrap, "POST", "/v1/tokens", `{"name":"nova-sched","role":"scheduler"}`, 201, `"token":"tpt_`},
		{"duplicate name", bootstrap, "POST", "/v1/tokens", `{"name":"nova-sched","role":"reader"}`, 409, "exists"},
		{"unknown role", bootstrap, "POST", "/v1/tokens", `{"name":"x","role":"root"}`, 400, `role \"root\"`},
		{"bad name and role together", bootstrap, "POST", "/v1/tokens", `{"name":"a b","role":""}`, 400, "; role"},
		{"reserved name", bootstrap, "POST", "/v1/tokens", `{"name":"bootstrap","role":"admin"}`, 400, "reserved"},
		{"unknown field", bootstrap, "POST", "/v1/tokens", `{"name":"x","role":"reader","hash":"00"}`, 400, "unknown field"},
		{"trailing data", bootstrap, "POST", "/v1/tokens", `{"name":"x","role":"reader"}{}`, 400, "after the JSON"},
		{"not JSON", bootstrap, "POST", "/v1/tokens", `name=x`, 400, "malformed"},
		{"oversized", bootstrap, "POST", "/v1/tokens", `{"name":"` + strings.Repeat("x", 2000) + `","role":"reader"}`, 413, "exceeds"},
		{"reader may not create", reader, "POST", "/v1/tokens", `{"name":"y","role":"admin"}`, 403, "role reader"},
		{"reader may not list", reader, "GET", "/v1/tokens", "", 403, "needs admin"},
		{"no credential", "", "GET", "/v1/tokens", "", 401, "bearer"},
		{"list", bootstrap, "GET", "/v1/tokens", "", 200, `"name":"nova-sched","role":"scheduler"`},
		{"revoke unknown", bootstrap, "DELETE", "/v1/tokens/nobody", "", 404, "no token"},
		{"revoke invalid name", bootstrap, "DELETE", "/v1/tokens/a%20b", "", 404, "no token"},
		{"revoke", bootstrap, "DELETE", "/v1/tokens/nova-sched", "", 204, ""},
		{"revoke again is harmless", bootstrap, "DELETE", "/v1/tokens/nova-sched", "", 204, ""},
		{"revoked name stays taken", bootstrap, "POST", "/v1/tokens", `{"name":"nova-sched","role":"scheduler"}`, 409, "revoked tokens keep"},
		{"listed as revoked", bootstrap, "GET", "/v1/tokens", "", 200, `"revoked_at":"`},
		{"wrong method", bootstrap, "PUT", "/v1/tokens", "", 405, ""},
	}
	var created string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.clock.Advance(time.Second)
			code, h, b := a.call(t, tt.token, tt.method, tt.path, tt.body)
			if code != tt.want {
				t.Fatalf("status %d, want %d: %s", code, tt.want, b)
			}
			if !strings.Contains(string(b), tt.contains) {
				t.Errorf("body %s does not contain %s", b, tt.contains)
			}
			if code == 201 {
				var got auth.NewTokenResponse
				if err := json.Unmarshal(b, &got); err != nil {
					t.Fatal(err)
				}
				created = got.Token
				if h.Get("Cache-Control") != "no-store" {
					t.Error("the secret may be cached")
				}
			}
			if tt.name == "list" {
				if created == "" || strings.Contains(string(b), created) || strings.Contains(string(b), "hash") {
					t.Errorf("the list shows a secret or hash: %s", b)
				}
			}
		})
	}

	// The revoked token no longer authenticates.
	if code, _, b := a.call(t, created, "GET", "/v1/audit", ""); code != 401 {
		t.Fatalf("revoked token: %d %s", code, b)
	}
	// Every change is in the audit log, by the principal who made it.
	es, err := a.store.ListAudit(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Actor+" "+e.Action+" "+e.Subject+" "+string(e.Detail))
	}
	want := []string{
		`bootstrap token.create viewer {"role":"reader"}`,
		`bootstrap token.create nova-sched {"role":"scheduler"}`,
		`bootstrap token.revoke nova-sched `,
		`bootstrap token.revoke nova-sched `,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := store.VerifyChain(es); err != nil {
		t.Fatal(err)
	}
}

func TestTokensAuditedByTheirCreator(t *testing.T) {
	a := newAPIServer(t, nil)
	ops := a.create(t, "ops", auth.RoleAdmin)
	if code, _, b := a.call(t, ops, "POST", "/v1/tokens", `{"name":"n1","role":"agent"}`); code != 201 {
		t.Fatalf("%d %s", code, b)
	}
	es, err := a.store.ListAudit(context.Background(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[1].Actor != "ops" || es[1].Subject != "n1" {
		t.Fatalf("audit entries %+v: want the second by ops about n1", es)
	}
}

func TestTokensStoredOnlyAsHashes(t *testing.T) {
	a := newAPIServer(t, nil)
	secret := a.create(t, "nova-sched", auth.RoleScheduler)

	db, err := sql.Open("sqlite", a.path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var hash []byte
	var name, role string
	if err := db.QueryRow(`SELECT hash, name, role FROM api_tokens`).Scan(&hash, &name, &role); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hash, auth.HashToken(secret)) || name != "nova-sched" || role != "scheduler" {
		t.Fatalf("row (%x, %s, %s): want the SHA-256 of the secret", hash, name, role)
	}
	// Nor is the secret anywhere else in the database, its WAL included.
	files, _ := filepath.Glob(a.path + "*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(secret)) || bytes.Contains(b, []byte(strings.TrimPrefix(secret, "tpt_"))) {
			t.Fatalf("%s holds the secret", f)
		}
	}
	// And the secret works.
	if code, _, b := a.call(t, secret, "GET", "/v1/tokens", ""); code != 403 {
		t.Fatalf("scheduler listing tokens: %d %s, want 403", code, b)
	}
}

// brokenAudit is a store whose audit log refuses writes.
type brokenAudit struct{ *store.Store }

func (brokenAudit) Append(context.Context, store.Entry) error { return errors.New("disk full") }

func TestUnauditedTokenIsTakenBack(t *testing.T) {
	s, _ := openStore(t)
	a := newAPIServer(t, brokenAudit{s})
	code, _, b := a.call(t, bootstrap, "POST", "/v1/tokens", `{"name":"ghost","role":"admin"}`)
	if code != http.StatusInternalServerError || strings.Contains(string(b), "tpt_") || strings.Contains(string(b), "disk") {
		t.Fatalf("%d %s: want a 500 without the token or the cause", code, b)
	}
	ts, err := s.ListTokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || !ts[0].Revoked() {
		t.Fatalf("tokens %+v: want ghost revoked", ts)
	}
}

func TestHandlersRefuseWithoutPrincipal(t *testing.T) {
	s, _ := openStore(t)
	tests := []struct {
		name string
		h    http.Handler
		ctx  context.Context
		path string
		want int
	}{
		{"tokens, no principal", auth.TokensHandler(s, time.Now, nil), context.Background(), "/v1/tokens", 401},
		{"tokens, reader", auth.TokensHandler(s, time.Now, nil), auth.WithPrincipal(context.Background(), auth.Principal{Name: "r", Role: auth.RoleReader}), "/v1/tokens", 403},
		{"tokens, admin", auth.TokensHandler(s, time.Now, nil), auth.WithPrincipal(context.Background(), auth.Principal{Name: "a", Role: auth.RoleAdmin}), "/v1/tokens", 200},
		{"audit, no principal", auth.AuditHandler(s, nil), context.Background(), "/v1/audit", 401},
		{"audit, scheduler", auth.AuditHandler(s, nil), auth.WithPrincipal(context.Background(), auth.Principal{Name: "s", Role: auth.RoleScheduler}), "/v1/audit", 403},
		{"audit, reader", auth.AuditHandler(s, nil), auth.WithPrincipal(context.Background(), auth.Principal{Name: "r", Role: auth.RoleReader}), "/v1/audit", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			tt.h.ServeHTTP(w, httptest.NewRequestWithContext(tt.ctx, "GET", tt.path, nil))
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.want, w.Body)
			}
		})
	}
}

func TestAuditAPI(t *testing.T) {
	a := newAPIServer(t, nil)
	reader := a.create(t, "viewer", auth.RoleReader) // entry 1
	ctx := context.Background()
	for i := range 4 { // entries 2-5, one with indented JSON that must come back byte for byte
		detail := []byte("{\n  \"n\": " + string(rune('0'+i)) + "\n}")
		if err := a.store.Append(ctx, store.Entry{Time: a.clock.Now(), Actor: "system", Action: "test.step", Subject: "h", Detail: detail}); err != nil {
			t.Fatal(err)
		}
	}
	page := func(t *testing.T, q string) []auth.AuditEntry {
		code, _, b := a.call(t, reader, "GET", "/v1/audit"+q, "")
		if code != 200 {
			t.Fatalf("%s: %d %s", q, code, b)
		}
		var es []auth.AuditEntry
		if err := json.Unmarshal(b, &es); err != nil {
			t.Fatal(err)
		}
		return es
	}
	tests := []struct {
		query string
		seqs  []int64
	}{
		{"", []int64{1, 2, 3, 4, 5}},
		{"?limit=2", []int64{1, 2}},
		{"?after=2&limit=2", []int64{3, 4}},
		{"?after=4", []int64{5}},
		{"?after=5", nil},
	}
	for _, tt := range tests {
		t.Run("page "+tt.query, func(t *testing.T) {
			es := page(t, tt.query)
			var seqs []int64
			for _, e := range es {
				seqs = append(seqs, e.Seq)
			}
			if len(seqs) != len(tt.seqs) || (len(seqs) > 0 && (seqs[0] != tt.seqs[0] || seqs[len(seqs)-1] != tt.seqs[len(tt.seqs)-1])) {
				t.Fatalf("seqs %v, want %v", seqs, tt.seqs)
			}
		})
	}
	t.Run("entries verify as served", func(t *testing.T) {
		var es []store.Entry
		for _, e := range page(t, "") {
			es = append(es, e.Entry())
		}
		if err := store.VerifyChain(es); err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(es[1].Detail, []byte("\n  ")) {
			t.Fatalf("detail %q was re-encoded", es[1].Detail)
		}
		code, _, b := a.call(t, reader, "GET", "/v1/audit/head", "")
		var head auth.AuditHeadResponse
		if code != 200 || json.Unmarshal(b, &head) != nil || head.Seq != 5 || !bytes.Equal(head.Hash, es[4].Hash) {
			t.Fatalf("head %d %s: want seq 5 and the last hash", code, b)
		}
	})
	for _, q := range []string{"?limit=0", "?limit=1001", "?after=-1", "?after=x", "?after=1&after=2", "?seq=1", "?after=%zz"} {
		t.Run("bad query "+q, func(t *testing.T) {
			if code, _, b := a.call(t, reader, "GET", "/v1/audit"+q, ""); code != 400 {
				t.Fatalf("%d %s, want 400", code, b)
			}
		})
	}
}

func TestParseAuditQuery(t *testing.T) {
	tests := []struct {
		raw   string
		after int64
		limit int
		ok    bool
	}{
		{"", 0, auth.DefaultAuditPage, true},
		{"after=7", 7, auth.DefaultAuditPage, true},
		{"limit=1000&after=9223372036854775807", 9223372036854775807, 1000, true},
		{"limit=1", 0, 1, true},
		{"after=9223372036854775808", 0, 0, false},
		{"limit=+5", 0, 0, false},
		{"limit=", 0, 0, false},
		{"after", 0, 0, false},
		{"x=1", 0, 0, false},
		{"after=1;limit=2", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			after, limit, err := auth.ParseAuditQuery(tt.raw)
			if (err == nil) != tt.ok || (tt.ok && (after != tt.after || limit != tt.limit)) {
				t.Fatalf("= %d, %d, %v; want %d, %d, ok=%v", after, limit, err, tt.after, tt.limit, tt.ok)
			}
		})
	}
}
