package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // raw access to the store's SQLite file

	"trustpool/internal/auth"
	"trustpool/internal/store"
)

const testAdminToken = "test-admin-token"

// testAPI is a real store behind the real token and audit handlers, served
// over TLS, with a state directory holding its CA and the admin token as
// the server writes them.
type testAPI struct {
	store    *store.Store
	dbPath   string
	stateDir string
	srv      *httptest.Server
}

func newTestAPI(t *testing.T) *testAPI {
	t.Helper()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "trustpool.db")
	s, err := store.Open(context.Background(), "sqlite:"+dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a := auth.New(auth.Config{Store: s, Bootstrap: testAdminToken})
	mux := http.NewServeMux()
	tokens := a.Require(auth.RoleAdmin)(auth.TokensHandler(s, time.Now, nil))
	mux.Handle("/v1/tokens", tokens)
	mux.Handle("/v1/tokens/", tokens)
	audit := a.Require(auth.RoleReader)(auth.AuditHandler(s, nil))
	mux.Handle("/v1/audit", audit)
	mux.Handle("/v1/audit/", audit)
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	for name, b := range map[string][]byte{"ca.pem": ca, "admin.token": []byte(testAdminToken + "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return &testAPI{store: s, dbPath: dbPath, stateDir: dir, srv: srv}
}

// client is the CLI's client for this API, made the way the commands make it.
func (a *testAPI) client(t *testing.T) *client {
	t.Helper()
	f := apiFlags{server: a.srv.URL, stateDir: a.stateDir}
	c, err := f.client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run executes trustpool with args (a command and its arguments) against
// this API and returns its standard output.
func (a *testAPI) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	t.Setenv("TRUSTPOOL_TOKEN", "")
	cmd := rootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append(args, "--server", a.srv.URL, "--state-dir", a.stateDir))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// exec runs raw SQL on the store's file, as someone with access to the
// database would.
func (a *testAPI) exec(t *testing.T, stmts ...string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+a.dbPath+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// hashOf reads entry seq's stored hash.
func (a *testAPI) hashOf(t *testing.T, seq int64) []byte {
	t.Helper()
	es, err := a.store.ListAudit(context.Background(), seq-1, 1)
	if err != nil || len(es) != 1 || es[0].Seq != seq {
		t.Fatalf("entry %d: %v %v", seq, es, err)
	}
	return es[0].Hash
}

// fill appends n entries.
func (a *testAPI) fill(t *testing.T, n int) {
	t.Helper()
	at := time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)
	for i := range n {
		e := store.Entry{Time: at.Add(time.Duration(i) * time.Minute), Actor: "ops", Action: "reference.put",
			Subject: fmt.Sprintf("vmm-kvm@v%d", i+1), Detail: fmt.Appendf(nil, `{"n":%d}`, i+1)}
		if err := a.store.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVerifyAuditDetectsTampering(t *testing.T) {
	const entries, page = 12, 5 // pages 1-5, 6-10, 11-12
	tests := []struct {
		name   string
		tamper func(t *testing.T, a *testAPI) *auditHead // returns a head recorded before tampering, if any
		seq    int64                                     // 0: intact
		fault  store.ChainFault
	}{
		{"intact", nil, 0, ""},
		{"actor changed", sqlTamper(`UPDATE audit SET actor = 'mallory' WHERE seq = 5`), 5, store.FaultChanged},
		{"detail changed", sqlTamper(`UPDATE audit SET detail = CAST('{"n":99}' AS BLOB) WHERE seq = 2`), 2, store.FaultChanged},
		{"time changed", sqlTamper(`UPDATE audit SET time = time + 1 WHERE seq = 1`), 1, store.FaultChanged},
		{"last entry changed", sqlTamper(`UPDATE audit SET subject = 'x' WHERE seq = 12`), 12, store.FaultChanged},
		{"hash changed at a page start", sqlTamper(`UPDATE audit SET hash = zeroblob(32) WHERE seq = 6`), 6, store.FaultChanged},
		{"entry removed", sqlTamper(`DELETE FROM audit WHERE seq = 4`), 4, store.FaultRemoved},
		{"entry removed at a page boundary", sqlTamper(`DELETE FROM audit WHERE seq = 6`), 6, store.FaultRemoved},
		{"first entry removed", sqlTamper(`DELETE FROM audit WHERE seq = 1`), 1, store.FaultRemoved},
		{"last entry removed", sqlTamper(`DELETE FROM audit WHERE seq = 12`), 12, store.FaultRemoved},
		{"entries swapped", sqlTamper(
			`UPDATE audit SET seq = -1 WHERE seq = 3`, `UPDATE audit SET seq = 3 WHERE seq = 7`, `UPDATE audit SET seq = 7 WHERE seq = -1`,
		), 3, store.FaultChanged},
		{"contents swapped, numbers kept", sqlTamper(
			`CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq IN (8, 9)`,
			`UPDATE audit SET (time, actor, action, subject, detail, hash) =
				(SELECT time, actor, action, subject, detail, hash FROM t WHERE t.seq = 17 - audit.seq) WHERE seq IN (8, 9)`,
		), 8, store.FaultChanged},
		{"last entry removed and the head rewound", func(t *testing.T, a *testAPI) *auditHead {
			recorded := &auditHead{Seq: 12, Hash: a.hashOf(t, 12)}
			h11 := hex.EncodeToString(a.hashOf(t, 11))
			a.exec(t, `DELETE FROM audit WHERE seq = 12`, `UPDATE audit_head SET seq = 11, hash = X'`+h11+`' WHERE id = 1`)
			return recorded
		}, 12, store.FaultRemoved},
		{"recorded head of a shorter log still holds", func(t *testing.T, a *testAPI) *auditHead {
			return &auditHead{Seq: 7, Hash: a.hashOf(t, 7)}
		}, 0, ""},
		{"recorded head not in this chain", func(t *testing.T, a *testAPI) *auditHead {
			return &auditHead{Seq: 7, Hash: a.hashOf(t, 8)}
		}, 7, store.FaultChanged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestAPI(t)
			a.fill(t, entries)
			var recorded *auditHead
			if tt.tamper != nil {
				recorded = tt.tamper(t, a)
			}
			rep, err := verifyAudit(context.Background(), a.client(t), page, recorded)
			if tt.seq == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if rep.entries != entries || rep.head.Seq != entries || !bytes.Equal(rep.head.Hash, a.hashOf(t, entries)) {
					t.Fatalf("report %+v: want %d entries and the last hash", rep, entries)
				}
				return
			}
			b, ok := errors.AsType[*auditBreak](err)
			if !ok {
				t.Fatalf("err = %v, want an *auditBreak", err)
			}
			if b.Seq != tt.seq || b.Fault != tt.fault {
				t.Fatalf("break at %d (%s), want %d (%s): %v", b.Seq, b.Fault, tt.seq, tt.fault, err)
			}
		})
	}
}

// sqlTamper runs stmts on the database.
func sqlTamper(stmts ...string) func(*testing.T, *testAPI) *auditHead {
	return func(t *testing.T, a *testAPI) *auditHead {
		a.exec(t, stmts...)
		return nil
	}
}

func TestVerifyAuditEmptyAndExactPages(t *testing.T) {
	for _, n := range []int{0, 1, 5, 10} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			a := newTestAPI(t)
			a.fill(t, n)
			rep, err := verifyAudit(context.Background(), a.client(t), 5, nil)
			if err != nil || rep.entries != int64(n) || rep.head.Seq != int64(n) {
				t.Fatalf("%+v, %v: want %d entries", rep, err, n)
			}
		})
	}
}

func TestAuditCommands(t *testing.T) {
	a := newTestAPI(t)
	a.fill(t, 3)

	out, err := a.run(t, "audit", "verify")
	if err != nil {
		t.Fatal(err)
	}
	head := fmt.Sprintf("3:%x", a.hashOf(t, 3))
	if want := "audit log intact: 3 entries\nhead: " + head + "\n"; out != want {
		t.Fatalf("verify printed %q, want %q", out, want)
	}
	if out, err = a.run(t, "audit", "verify", "--head", head, "--json"); err != nil || !strings.Contains(out, `"intact": true`) {
		t.Fatalf("verify --head --json: %q, %v", out, err)
	}
	for _, bad := range []string{"3", "x:00", "0:" + strings.Repeat("0", 64), "3:abcd"} {
		if _, err := a.run(t, "audit", "verify", "--head", bad); err == nil || !strings.Contains(err.Error(), "--head") {
			t.Errorf("--head %q: err = %v", bad, err)
		}
	}

	out, err = a.run(t, "audit", "list", "--after", "1", "--limit", "1")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "SEQ") || !strings.Contains(lines[1], `vmm-kvm@v2  {"n":2}`) {
		t.Fatalf("list printed:\n%s", out)
	}

	a.exec(t, `UPDATE audit SET action = 'nothing.happened' WHERE seq = 2`)
	_, err = a.run(t, "audit", "verify")
	if err == nil || !strings.Contains(err.Error(), "entry 2 changed") || !strings.Contains(err.Error(), `action "nothing.happened"`) {
		t.Fatalf("verify of a changed log: %v", err)
	}
}

func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"{\n  \"a\": 1\n}", `{ "a": 1 }`},
		{"{\"x\":\"\x1b[31m\xff\"}", `{"x":"\x1b[31m\xff"}`},
		{`{"name":"ünïcode"}`, `{"name":"ünïcode"}`},
	}
	for _, tt := range tests {
		if got := oneLine([]byte(tt.in)); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
