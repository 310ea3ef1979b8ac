package auth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"trustpool/internal/auth"
)

// FuzzAuthenticate feeds arbitrary credential headers: none may panic, and
// only the three real credentials may authenticate, each as itself.
func FuzzAuthenticate(f *testing.F) {
	s, _ := openStore(f)
	tok := addToken(f, s, "sched", "scheduler", time.Time{})
	a := auth.New(auth.Config{Store: s, Bootstrap: bootstrap, NovaBlob: novaBlob})
	for _, seed := range [][2]string{
		{"Bearer " + tok, ""}, {"bearer  " + bootstrap + " ", ""}, {"", novaBlob}, {"", ""},
		{"Bearer", ""}, {"Basic Zm9vOmJhcg==", novaBlob}, {"Bearer \x00", "\xff"}, {"Bearer " + strings.Repeat("A", 300), ""},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, authz, blob string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if authz != "" {
			r.Header["Authorization"] = []string{authz}
		}
		if blob != "" {
			r.Header["X-Auth-Blob"] = []string{blob}
		}
		p, err := a.Authenticate(r)
		if err != nil {
			return
		}
		tokOf := func(h string) string { _, t, _ := strings.Cut(h, " "); return strings.Trim(t, " ") }
		switch p {
		case auth.Principal{Name: "sched", Role: auth.RoleScheduler}:
			if tokOf(authz) != tok {
				t.Fatalf("%q authenticated as sched", authz)
			}
		case auth.Principal{Name: auth.BootstrapName, Role: auth.RoleAdmin}:
			if tokOf(authz) != bootstrap {
				t.Fatalf("%q authenticated as bootstrap", authz)
			}
		case auth.Principal{Name: auth.NovaName, Role: auth.RoleScheduler}:
			if authz != "" || blob != novaBlob {
				t.Fatalf("%q / %q authenticated as nova", authz, blob)
			}
		default:
			t.Fatalf("unexpected principal %+v", p)
		}
	})
}

// FuzzParseAuditQuery feeds arbitrary query strings to the audit API's
// parser: what it accepts must be in range.
func FuzzParseAuditQuery(f *testing.F) {
	for _, seed := range []string{"", "after=1&limit=10", "limit=1000", "after=-1", "after=1&after=2", "%zz", "limit=1e3", "after=9223372036854775808"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		after, limit, err := auth.ParseAuditQuery(raw)
		if err != nil {
			return
		}
		if after < 0 || limit < 1 || limit > auth.MaxAuditPage {
			t.Fatalf("%q accepted as after=%d limit=%d", raw, after, limit)
		}
	})
}

// FuzzCreateToken feeds arbitrary bodies to POST /v1/tokens: the answer is
// a 201 whose token works with the requested role, or a client error.
func FuzzCreateToken(f *testing.F) {
	s, _ := openStore(f)
	h := auth.TokensHandler(s, time.Now, nil)
	ctx := auth.WithPrincipal(context.Background(), auth.Principal{Name: "fuzzer", Role: auth.RoleAdmin})
	for _, seed := range []string{
		`{"name":"a","role":"reader"}`, `{"name":"a","role":"reader"}`, `{"name":"bootstrap","role":"admin"}`,
		`{"name":"x","role":"root"}`, `{"name":1}`, `{}`, `[]`, `null`, `{"name":"b","role":"agent","x":1}`, "\xff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/tokens", strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusBadRequest, http.StatusConflict, http.StatusRequestEntityTooLarge:
			return
		case http.StatusCreated:
		default:
			t.Fatalf("%q: status %d %s", body, w.Code, w.Body)
		}
		var got auth.NewTokenResponse
		if err := json.NewDecoder(bytes.NewReader(w.Body.Bytes())).Decode(&got); err != nil {
			t.Fatal(err)
		}
		stored, err := s.TokenByHash(context.Background(), auth.HashToken(got.Token))
		if err != nil || stored.Name != got.Name || auth.Role(stored.Role) != got.Role || !got.Role.Valid() || auth.ValidTokenName(got.Name) != nil {
			t.Fatalf("%q: created %+v, stored %+v (%v)", body, got, stored, err)
		}
	})
}
