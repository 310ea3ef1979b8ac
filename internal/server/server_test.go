package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trustpool/internal/agent"
	"trustpool/internal/agent/bootsim"
	"trustpool/internal/agent/bootsim/bootsimtest"
	"trustpool/internal/agent/swtpm"
	"trustpool/internal/agent/swtpm/swtpmtest"
	"trustpool/internal/agent/tpm"
	"trustpool/internal/api"
	"trustpool/internal/enroll"
	"trustpool/internal/evidence"
	"trustpool/internal/integrity"
	"trustpool/internal/server"
	"trustpool/internal/server/servertest"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// needSWTPM skips without swtpm, except in CI where it must be there.
func needSWTPM(t *testing.T) { swtpmtest.RequireBinary(t, swtpm.Binary) }

type env struct {
	t     *testing.T
	srv   *server.Server
	http  *http.Client
	token string
	ctx   context.Context
}

func startServer(t *testing.T) *env {
	t.Helper()
	return startServerWith(t, nil)
}

// startServerWith starts a server whose config edit may change first.
func startServerWith(t *testing.T, edit func(*server.Config)) *env {
	t.Helper()
	return startServerIn(t, t.TempDir(), edit)
}

// startServerIn is startServerWith in the state directory dir.
func startServerIn(t *testing.T, dir string, edit func(*server.Config)) *env {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg := server.Config{StateDir: dir, Listen: "127.0.0.1:0", Log: log,
		Integrity: integrity.Config{Interval: time.Hour, Log: log}}
	if edit != nil {
		edit(&cfg)
	}
	srv, ctx, tok := servertest.Start(t, cfg)
	return &env{t: t, srv: srv, http: api.NewHTTPClient(srv.CAPEM()), token: tok, ctx: ctx}
}

// call sends body (raw bytes or a value to encode) and returns status and body.
func (e *env) call(method, path string, body any) (int, []byte) {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.srv.URL()+path, r)
	req.Header.Set("Authorization", "Bearer "+e.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// node is a simulated compute node: swtpm after a measured boot, and its agent.
type node struct {
	name string
	tpm  *tpm.TPM
	dir  string // the agent's state directory
}

func startNode(t *testing.T, e *env, name string, prof bootsim.Profile) *node {
	t.Helper()
	tp, logs := bootsimtest.Boot(t, prof)
	dir := t.TempDir()
	srtm, drtm := filepath.Join(dir, "srtm.log"), ""
	if err := os.WriteFile(srtm, logs.SRTM, 0o600); err != nil {
		t.Fatal(err)
	}
	if len(logs.DRTM) > 0 {
		drtm = filepath.Join(dir, "drtm.log")
		if err := os.WriteFile(drtm, logs.DRTM, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tok := enroll.NewToken()
	if err := e.srv.Store().CreateJoinToken(e.ctx, store.JoinToken{Hash: enroll.TokenHash(tok), Host: name, ExpiresAt: time.Now().Add(time.Hour), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{Name: name, Server: e.srv.URL(), ServerCA: e.srv.CAPEM(), Listen: "127.0.0.1:0",
		StateDir: dir, EventLog: srtm, DRTMLog: drtm, JoinToken: tok, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, tp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "first verdict of "+name, func() bool { _, ok := e.srv.Integrity().Cache().Verdict(name); return ok })
	return &node{name: name, tpm: tp, dir: dir}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) attest(name string) api.PoolEntry {
	e.t.Helper()
	code, body := e.call("POST", "/v1/hosts/"+name+"/attest", nil)
	if code != http.StatusOK {
		e.t.Fatalf("attest %s: %d %s", name, code, body)
	}
	var pe api.PoolEntry
	if err := json.Unmarshal(body, &pe); err != nil {
		e.t.Fatal(err)
	}
	return pe
}

// golden imports host's verified evidence as the known-good values.
func (e *env) golden(host string) {
	e.t.Helper()
	if code, body := e.call("POST", "/v1/golden", map[string]string{"host": host}); code != http.StatusOK {
		e.t.Fatalf("golden import: %d %s", code, body)
	}
}

func hasPCR(reasons []verdict.Reason, code string, pcr int) bool {
	for _, r := range reasons {
		if r.Code == code && r.PCR != nil && *r.PCR == pcr {
			return true
		}
	}
	return false
}

// TestAttestEndToEnd: an agent on swtpm enrolls over real HTTPS, becomes
// trusted after a golden-host import, and turns untrusted, naming the PCR,
// once a measured PCR is extended behind the event log's back.
func TestAttestEndToEnd(t *testing.T) {
	needSWTPM(t)
	e := startServer(t)
	n := startNode(t, e, "node1", bootsim.Profile{Launch: true})

	if v := e.attest("node1"); v.Level != verdict.Untrusted || v.Reasons[0].Code != verdict.CodeNoPolicy {
		t.Fatalf("before any known-good values: %+v, want untrusted no-policy", v)
	}
	e.golden("node1")
	if v, _ := e.srv.Integrity().Cache().Verdict("node1"); v.At(time.Now()) != verdict.Trusted {
		t.Fatalf("after golden import, re-evaluated verdict = %+v, want trusted", v)
	}
	if v := e.attest("node1"); v.Level != verdict.Trusted {
		t.Fatalf("fresh attestation: %+v, want trusted", v)
	}
	// Something runs on the node that the event log does not show.
	sum := sha256.Sum256([]byte("rootkit"))
	if err := n.tpm.Extend(9, map[evidence.Bank][]byte{evidence.SHA256: sum[:]}); err != nil {
		t.Fatal(err)
	}
	v := e.attest("node1")
	if v.Level != verdict.Untrusted || !hasPCR(v.Reasons, verdict.CodeReplay, 9) {
		t.Fatalf("after extending PCR 9: %+v, want untrusted with an event-log replay reason for PCR 9", v)
	}
	// The history recorded both changes.
	code, body := e.call("GET", "/v1/hosts/node1", nil)
	var hv api.HostView
	if code != http.StatusOK || json.Unmarshal(body, &hv) != nil || len(hv.History) < 3 {
		t.Fatalf("host view: %d %s", code, body)
	}
}

// TestBadInputKeepsServing sends malformed, truncated, oversized and
// mistyped bodies to every endpoint that takes one: each gets a 4xx with a
// message, and the enrolled host and its verdict are still there after.
func TestBadInputKeepsServing(t *testing.T) {
	needSWTPM(t)
	e := startServer(t)
	startNode(t, e, "node1", bootsim.Profile{})
	before := e.attest("node1")

	big := append([]byte(`{"host":"`), bytes.Repeat([]byte("a"), 5<<20)...)
	bodies := map[string][]byte{
		"malformed":     []byte(`{"host": node1}`),
		"truncated":     []byte(`{"host":"node1","ek_public":"AAA`),
		"oversized":     big,
		"empty":         {},
		"unknown field": []byte(`{"host":"node1","evil":true}`),
		"wrong type":    []byte(`{"host":17}`),
		"trailing data": []byte(`{"host":"node1"} {}`),
	}
	paths := []string{"/v1/enroll", "/v1/enroll/activate", "/v1/hello", "/v1/golden", "/v1/join-tokens", "/v1/filter", "/v1/policies/x", "/v1/references/x", "/v1/preview", "/v1/apply"}
	for name, body := range bodies {
		for _, p := range paths {
			method := "POST"
			if strings.HasPrefix(p, "/v1/policies/") || strings.HasPrefix(p, "/v1/references/") {
				method = "PUT"
			}
			t.Run(name+p, func(t *testing.T) {
				code, out := e.call(method, p, body)
				if code < 400 || code >= 500 {
					t.Fatalf("%s %s with %s body: %d %s, want 4xx", method, p, name, code, out)
				}
				var eb struct{ Error string }
				if json.Unmarshal(out, &eb) != nil || eb.Error == "" {
					t.Fatalf("no error message: %s", out)
				}
			})
		}
	}
	code, body := e.call("GET", "/v1/pool", nil)
	var pool api.Pool
	if code != http.StatusOK || json.Unmarshal(body, &pool) != nil || len(pool.Hosts) != 1 || pool.Hosts[0].VTime != before.VTime {
		t.Fatalf("after bad input the pool is %d %s, want node1 with its verdict of %s", code, body, before.VTime)
	}
	if code, _ := e.call("GET", "/v1/pool", nil); code != http.StatusOK {
		t.Fatal("server stopped serving")
	}
}

// /readyz fails when it should: a store that does not answer makes the
// server not ready (a load balancer then sends schedulers elsewhere).
func TestReadyzFailsWithoutStore(t *testing.T) {
	e := startServer(t)
	if code, body := e.call("GET", "/readyz", nil); code != http.StatusOK {
		t.Fatalf("readyz of a healthy server: %d %s", code, body)
	}
	e.srv.Store().Close()
	code, body := e.call("GET", "/readyz", nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "store") {
		t.Fatalf("readyz with the store closed: %d %s, want 503 naming the store", code, body)
	}
	if code, _ := e.call("GET", "/healthz", nil); code != http.StatusOK {
		t.Fatalf("healthz (the process is alive): %d, want 200", code)
	}
}
