package auth_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"trustpool/internal/auth"
	"trustpool/internal/store"
)

const (
	bootstrap = "bootstrap-secret-from-admin.token"
	novaBlob  = "nova-blob-from-nova-auth-blob"
)

// openStore opens a real SQLite store in a temporary directory and returns
// it with the database file's path.
func openStore(t testing.TB) (*store.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "trustpool.db")
	s, err := store.Open(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// addToken stores a new token with role and returns its secret.
func addToken(t testing.TB, s *store.Store, name, role string, revokedAt time.Time) string {
	t.Helper()
	tok, hash := auth.NewToken()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.CreateToken(context.Background(), store.Token{Hash: hash, Name: name, Role: role, CreatedAt: at, RevokedAt: revokedAt}); err != nil {
		t.Fatal(err)
	}
	return tok
}

// whoami answers with the Principal that Require passed on.
var whoami = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	p, ok := auth.From(r.Context())
	if !ok {
		http.Error(w, "no principal", http.StatusInternalServerError)
		return
	}
	json.NewEncoder(w).Encode(p)
})

func TestRequire(t *testing.T) {
	s, _ := openStore(t)
	tokens := map[string]string{}
	for _, tk := range []struct{ name, role string }{
		{"ops", "admin"}, {"viewer", "reader"}, {"nova-sched", "scheduler"}, {"node7", "agent"}, {"legacy", "root"},
	} {
		tokens[tk.name] = addToken(t, s, tk.name, tk.role, time.Time{})
	}
	tokens["old"] = addToken(t, s, "old", "scheduler", time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))

	a := auth.New(auth.Config{Store: s, Bootstrap: bootstrap, NovaBlob: novaBlob})
	h := a.Require(auth.RoleScheduler)(whoami)

	tests := []struct {
		name    string
		headers map[string][]string
		want    int
		who     auth.Principal
	}{
		{"no credential", nil, 401, auth.Principal{}},
		{"unknown token", bearer("tpt_not-a-real-token"), 401, auth.Principal{}},
		{"empty bearer", hdr("Authorization", "Bearer "), 401, auth.Principal{}},
		{"basic scheme", hdr("Authorization", "Basic b3BzOnB3"), 401, auth.Principal{}},
		{"token without scheme", hdr("Authorization", tokens["nova-sched"]), 401, auth.Principal{}},
		{"oversized token", bearer(strings.Repeat("x", 300)), 401, auth.Principal{}},
		{"scheduler token", bearer(tokens["nova-sched"]), 200, auth.Principal{Name: "nova-sched", Role: auth.RoleScheduler}},
		{"scheme is case-insensitive", hdr("Authorization", "bearer "+tokens["nova-sched"]), 200, auth.Principal{Name: "nova-sched", Role: auth.RoleScheduler}},
		{"reader is forbidden", bearer(tokens["viewer"]), 403, auth.Principal{}},
		{"agent is forbidden", bearer(tokens["node7"]), 403, auth.Principal{}},
		{"admin satisfies scheduler", bearer(tokens["ops"]), 200, auth.Principal{Name: "ops", Role: auth.RoleAdmin}},
		{"bootstrap is admin", bearer(bootstrap), 200, auth.Principal{Name: auth.BootstrapName, Role: auth.RoleAdmin}},
		{"bootstrap prefix is not bootstrap", bearer(bootstrap[:len(bootstrap)-1]), 401, auth.Principal{}},
		{"revoked token", bearer(tokens["old"]), 401, auth.Principal{}},
		{"unknown stored role", bearer(tokens["legacy"]), 401, auth.Principal{}},
		{"nova blob is a scheduler", hdr("X-Auth-Blob", novaBlob), 200, auth.Principal{Name: auth.NovaName, Role: auth.RoleScheduler}},
		{"wrong nova blob", hdr("X-Auth-Blob", novaBlob+"x"), 401, auth.Principal{}},
		{"two nova blobs", map[string][]string{"X-Auth-Blob": {novaBlob, novaBlob}}, 401, auth.Principal{}},
		{"two authorization headers", map[string][]string{"Authorization": {"Bearer " + tokens["ops"], "Bearer " + tokens["ops"]}}, 401, auth.Principal{}},
		{"a bad bearer is not saved by a good blob", map[string][]string{"Authorization": {"Bearer nope"}, "X-Auth-Blob": {novaBlob}}, 401, auth.Principal{}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/v1/filter", nil)
			r.RemoteAddr = "192.0.2." + strconv.Itoa(i+1) + ":5555" // failures of one case do not limit another
			for k, vs := range tt.headers {
				r.Header[k] = vs
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d (body %s)", w.Code, tt.want, w.Body)
			}
			switch tt.want {
			case 200:
				var got auth.Principal
				if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got != tt.who {
					t.Fatalf("principal %+v (%v), want %+v", got, err, tt.who)
				}
			case 401:
				if w.Header().Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				fallthrough
			default:
				var body struct{ Error string }
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error == "" {
					t.Errorf("body %q: want a JSON error (%v)", w.Body, err)
				}
			}
		})
	}
}

func TestRequireRoles(t *testing.T) {
	s, _ := openStore(t)
	a := auth.New(auth.Config{Store: s})
	tokens := map[auth.Role]string{}
	for _, role := range auth.Roles() {
		tokens[role] = addToken(t, s, "t-"+string(role), string(role), time.Time{})
	}
	tests := []struct {
		name    string
		require []auth.Role
		allowed []auth.Role
	}{
		{"admin only", []auth.Role{auth.RoleAdmin}, []auth.Role{auth.RoleAdmin}},
		{"no roles means admin only", nil, []auth.Role{auth.RoleAdmin}},
		{"reader", []auth.Role{auth.RoleReader}, []auth.Role{auth.RoleAdmin, auth.RoleReader}},
		{"scheduler", []auth.Role{auth.RoleScheduler}, []auth.Role{auth.RoleAdmin, auth.RoleScheduler}},
		{"agent", []auth.Role{auth.RoleAgent}, []auth.Role{auth.RoleAdmin, auth.RoleAgent}},
		{"reader or scheduler", []auth.Role{auth.RoleReader, auth.RoleScheduler}, []auth.Role{auth.RoleAdmin, auth.RoleReader, auth.RoleScheduler}},
	}
	for _, tt := range tests {
		h := a.Require(tt.require...)(whoami)
		for _, role := range auth.Roles() {
			t.Run(tt.name+"/"+string(role), func(t *testing.T) {
				r := httptest.NewRequest(http.MethodGet, "/", nil)
				r.Header.Set("Authorization", "Bearer "+tokens[role])
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				want := http.StatusForbidden
				for _, ok := range tt.allowed {
					if ok == role {
						want = http.StatusOK
					}
				}
				if w.Code != want {
					t.Fatalf("status %d, want %d", w.Code, want)
				}
			})
		}
	}
}

func TestRequireLimitsFailedAuthentication(t *testing.T) {
	s, _ := openStore(t)
	good := addToken(t, s, "sched", "scheduler", time.Time{})
	c := newClock()
	a := auth.New(auth.Config{Store: s, Now: c.Now, FailLimit: auth.Rate{PerSecond: 1, Burst: 3}})
	h := a.Require(auth.RoleScheduler)(whoami)

	tests := []struct {
		name    string
		advance time.Duration
		addr    string
		token   string // "" sends no credential
		want    int
	}{
		{"1st failure", 0, "192.0.2.1:1", "bad", 401},
		{"2nd failure", 0, "192.0.2.1:2", "bad", 401},
		{"3rd failure", 0, "192.0.2.1:3", "bad", 401},
		{"4th attempt is limited", 0, "192.0.2.1:4", "bad", 429},
		{"a good token from the same address is limited too", 0, "192.0.2.1:5", good, 429},
		{"another address is not limited", 0, "192.0.2.2:1", good, 200},
		{"no credential does not count (1)", 0, "192.0.2.3:1", "", 401},
		{"no credential does not count (2)", 0, "192.0.2.3:1", "", 401},
		{"no credential does not count (3)", 0, "192.0.2.3:1", "", 401},
		{"no credential does not count (4)", 0, "192.0.2.3:1", "", 401},
		{"a good token is not a failure", 0, "192.0.2.3:1", good, 200},
		{"one attempt regained after a second", time.Second, "192.0.2.1:6", "bad", 401},
		{"and spent", 0, "192.0.2.1:7", good, 429},
		{"a second more: good token passes", time.Second, "192.0.2.1:8", good, 200},
		{"IPv6 /64 counts as one client (1)", 0, "[2001:db8::1]:1", "bad", 401},
		{"IPv6 /64 counts as one client (2)", 0, "[2001:db8::2]:1", "bad", 401},
		{"IPv6 /64 counts as one client (3)", 0, "[2001:db8::3]:1", "bad", 401},
		{"IPv6 /64 counts as one client (4)", 0, "[2001:db8::4]:1", "bad", 429},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.Advance(tt.advance)
			r := httptest.NewRequest(http.MethodPost, "/v1/filter", nil)
			r.RemoteAddr = tt.addr
			if tt.token != "" {
				r.Header.Set("Authorization", "Bearer "+tt.token)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("status %d, want %d (body %s)", w.Code, tt.want, w.Body)
			}
			if tt.want == 429 && w.Header().Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		})
	}
}

// failingLookup is a store that cannot answer.
type failingLookup struct{}

func (failingLookup) TokenByHash(context.Context, []byte) (store.Token, error) {
	return store.Token{}, errors.New("database is on fire")
}

func TestAuthenticateStoreFailure(t *testing.T) {
	a := auth.New(auth.Config{Store: failingLookup{}, Bootstrap: bootstrap})
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Authorization", "Bearer tpt_whatever")
	_, err := a.Authenticate(r)
	if err == nil || errors.Is(err, auth.ErrBadCredential) || errors.Is(err, auth.ErrNoCredential) {
		t.Fatalf("err = %v, want a store error, not a credential verdict", err)
	}
	// The bootstrap token does not need the store.
	r.Header.Set("Authorization", "Bearer "+bootstrap)
	if p, err := a.Authenticate(r); err != nil || p.Role != auth.RoleAdmin {
		t.Fatalf("bootstrap: %+v, %v", p, err)
	}
	// Through Require, a store failure is a 500 that shows no details.
	w := httptest.NewRecorder()
	r.Header.Set("Authorization", "Bearer tpt_whatever")
	a.Require(auth.RoleReader)(whoami).ServeHTTP(w, r)
	if w.Code != http.StatusInternalServerError || strings.Contains(w.Body.String(), "fire") {
		t.Fatalf("status %d body %s: want 500 without the cause", w.Code, w.Body)
	}
}

func TestEmptyFileCredentialsAreDisabled(t *testing.T) {
	s, _ := openStore(t)
	a := auth.New(auth.Config{Store: s}) // no bootstrap, no Nova blob
	for _, h := range []map[string][]string{bearer(""), hdr("Authorization", "Bearer"), hdr("X-Auth-Blob", "")} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		for k, vs := range h {
			r.Header[k] = vs
		}
		if p, err := a.Authenticate(r); err == nil {
			t.Errorf("%v authenticated as %+v", h, p)
		}
	}
}

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		tok, hash := auth.NewToken()
		sum := sha256.Sum256([]byte(tok))
		if string(hash) != string(sum[:]) {
			t.Fatalf("hash of %q is not its SHA-256", tok)
		}
		if !strings.HasPrefix(tok, "tpt_") || len(tok) != 4+43 {
			t.Fatalf("token %q: want tpt_ and 43 base64url characters", tok)
		}
		if seen[tok] {
			t.Fatalf("token %q repeated", tok)
		}
		seen[tok] = true
	}
}

func TestValidTokenName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"nova-scheduler", true}, {"ops.alice_2", true}, {"A", true}, {strings.Repeat("a", 64), true},
		{"", false}, {strings.Repeat("a", 65), false}, {"-x", false}, {".x", false}, {"a b", false},
		{"a/b", false}, {"é", false}, {"bootstrap", false}, {"Nova", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := auth.ValidTokenName(tt.name); (err == nil) != tt.ok {
				t.Fatalf("ValidTokenName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
		})
	}
}

func bearer(tok string) map[string][]string { return hdr("Authorization", "Bearer "+tok) }

func hdr(k, v string) map[string][]string { return map[string][]string{k: {v}} }

func BenchmarkAuthenticate(b *testing.B) {
	s, _ := openStore(b)
	tok := addToken(b, s, "sched", "scheduler", time.Time{})
	a := auth.New(auth.Config{Store: s, Bootstrap: bootstrap, NovaBlob: novaBlob})
	for _, bc := range []struct {
		name   string
		header string
		value  string
	}{
		{"stored token", "Authorization", "Bearer " + tok},
		{"bootstrap", "Authorization", "Bearer " + bootstrap},
		{"nova blob", "X-Auth-Blob", novaBlob},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodPost, "/v1/filter", nil)
			r.Header.Set(bc.header, bc.value)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Authenticate(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
