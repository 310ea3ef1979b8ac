package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"trustpool/internal/httpjson"
	"trustpool/internal/problem"
	"trustpool/internal/store"
)

// TokenStore is what the token API reads and writes (store.Store does).
type TokenStore interface {
	CreateToken(ctx context.Context, t store.Token) error
	ListTokens(ctx context.Context) ([]store.Token, error)
	RevokeToken(ctx context.Context, name string, at time.Time) error
	Append(ctx context.Context, e store.Entry) error
}

// AuditLog is what the audit API reads (store.Store does).
type AuditLog interface {
	ListAudit(ctx context.Context, afterSeq int64, limit int) ([]store.Entry, error)
	AuditHead(ctx context.Context) (seq int64, hash []byte, err error)
}

// TokenRequest asks for a new token: POST /v1/tokens.
type TokenRequest struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// NewTokenResponse is the answer to POST /v1/tokens: the only time the
// secret is shown.
type NewTokenResponse struct {
	Name  string `json:"name"`
	Role  Role   `json:"role"`
	Token string `json:"token"`
}

// TokenInfo is a token as GET /v1/tokens lists it: no secret, no hash.
type TokenInfo struct {
	Name      string     `json:"name"`
	Role      Role       `json:"role"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// AuditEntry is an audit-log entry exactly as stored, so that a client can
// recompute the hash chain. Detail and Hash are bytes (base64 in JSON):
// re-encoding Detail as a JSON value could change its bytes and so break
// the chain.
type AuditEntry struct {
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Subject string    `json:"subject"`
	Detail  []byte    `json:"detail,omitempty"`
	Hash    []byte    `json:"hash"`
}

// Entry converts e back to the store's form, for store.VerifyChain.
func (e AuditEntry) Entry() store.Entry {
	return store.Entry{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Subject: e.Subject, Detail: e.Detail, Hash: e.Hash}
}

// AuditHeadResponse is the chain's head as the database holds it (GET
// /v1/audit/head): the last entry must carry this sequence number and hash.
type AuditHeadResponse struct {
	Seq  int64  `json:"seq"`
	Hash []byte `json:"hash"`
}

// Audit page sizes.
const (
	DefaultAuditPage = 100
	MaxAuditPage     = 1000
)

// maxTokenRequest bounds a POST /v1/tokens body; a valid one is < 100 bytes.
const maxTokenRequest = 1 << 10

// auditTimeout bounds the audit write that completes a token change; it runs
// even if the client goes away, so a change is never left unaudited.
const auditTimeout = 10 * time.Second

// TokensHandler serves the token API for admins:
//
//	POST   /v1/tokens         {"name","role"} → 201 {"name","role","token"}
//	GET    /v1/tokens         → 200 [{"name","role","created_at","revoked_at"}]
//	DELETE /v1/tokens/{name}  → 204
//
// Mount it behind Require(RoleAdmin); it also refuses by itself any request
// without an admin Principal. Every change is appended to the audit log with
// the Principal's name as the actor. Revoked tokens stay listed and keep
// their names taken, so the audit log's actors stay unambiguous.
func TokensHandler(s TokenStore, now func() time.Time, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &tokensAPI{store: s, now: now, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/tokens", t.create)
	mux.HandleFunc("GET /v1/tokens", t.list)
	mux.HandleFunc("DELETE /v1/tokens/{name}", t.revoke)
	return guard(log, mux, RoleAdmin)
}

type tokensAPI struct {
	store TokenStore
	now   func() time.Time
	log   *slog.Logger
}

func (t *tokensAPI) create(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if err := httpjson.Decode(w, r, maxTokenRequest, &req); err != nil {
		httpjson.Error(w, r, t.log, err)
		return
	}
	if err := req.validate(); err != nil {
		httpjson.Error(w, r, t.log, err)
		return
	}
	token, hash := NewToken()
	at := t.now()
	err := t.store.CreateToken(r.Context(), store.Token{Hash: hash, Name: req.Name, Role: string(req.Role), CreatedAt: at})
	if errors.Is(err, store.ErrConflict) {
		err = problem.Wrap(problem.Conflict, err, "a token named %q exists (revoked tokens keep their names)", req.Name)
	}
	if err != nil {
		httpjson.Error(w, r, t.log, err)
		return
	}
	detail, err := json.Marshal(struct {
		Role Role `json:"role"`
	}{req.Role})
	if err == nil {
		err = t.audit(r, "token.create", req.Name, detail, func(ctx context.Context) error {
			// No token may work without its audit record: take it back.
			return t.store.RevokeToken(ctx, req.Name, at)
		})
	}
	if err != nil {
		httpjson.Error(w, r, t.log, fmt.Errorf("create token %s: %w", req.Name, err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpjson.JSON(w, http.StatusCreated, NewTokenResponse{Name: req.Name, Role: req.Role, Token: token})
}

func (req *TokenRequest) validate() error {
	var errs []string
	if err := ValidTokenName(req.Name); err != nil {
		errs = append(errs, err.Error())
	}
	if !req.Role.Valid() {
		errs = append(errs, fmt.Sprintf("role %q: want one of %v", req.Role, Roles()))
	}
	if len(errs) > 0 {
		return problem.New(problem.Invalid, "%s", strings.Join(errs, "; "))
	}
	return nil
}

func (t *tokensAPI) list(w http.ResponseWriter, r *http.Request) {
	ts, err := t.store.ListTokens(r.Context())
	if err != nil {
		httpjson.Error(w, r, t.log, err)
		return
	}
	out := make([]TokenInfo, 0, len(ts))
	for _, tk := range ts {
		info := TokenInfo{Name: tk.Name, Role: Role(tk.Role), CreatedAt: tk.CreatedAt}
		if tk.Revoked() {
			info.RevokedAt = &tk.RevokedAt
		}
		out = append(out, info)
	}
	httpjson.JSON(w, http.StatusOK, out)
}

func (t *tokensAPI) revoke(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	notFound := problem.New(problem.NotFound, "no token %q", name)
	if ValidTokenName(name) != nil {
		httpjson.Error(w, r, t.log, notFound)
		return
	}
	err := t.store.RevokeToken(r.Context(), name, t.now())
	if errors.Is(err, store.ErrNotFound) {
		err = notFound
	}
	if err == nil {
		// The token is revoked already: a failed audit leaves the safe state.
		err = t.audit(r, "token.revoke", name, nil, nil)
	}
	if err != nil {
		httpjson.Error(w, r, t.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// audit appends the record of a change made for r's Principal. When the
// append fails, undo (if set) runs. Both survive the client going away.
func (t *tokensAPI) audit(r *http.Request, action, subject string, detail []byte, undo func(context.Context) error) error {
	p, _ := From(r.Context()) // guard made sure it is there
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
	defer cancel()
	err := t.store.Append(ctx, store.Entry{Time: t.now(), Actor: p.Name, Action: action, Subject: subject, Detail: detail})
	if err != nil && undo != nil {
		if uerr := undo(ctx); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undo unaudited %s: %w", action, uerr))
		}
	}
	if err != nil {
		return fmt.Errorf("audit %s %s: %w", action, subject, err)
	}
	return nil
}

// AuditHandler serves the audit log to readers (and admins):
//
//	GET /v1/audit?after=SEQ&limit=N → 200 [AuditEntry…], Seq > SEQ, in order
//	GET /v1/audit/head              → 200 {"seq","hash"}
//
// Mount it behind Require(RoleReader); it also refuses by itself any request
// without a reader or admin Principal.
func AuditHandler(s AuditLog, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/audit", func(w http.ResponseWriter, r *http.Request) {
		after, limit, err := ParseAuditQuery(r.URL.RawQuery)
		if err != nil {
			httpjson.Error(w, r, log, err)
			return
		}
		es, err := s.ListAudit(r.Context(), after, limit)
		if err != nil {
			httpjson.Error(w, r, log, err)
			return
		}
		out := make([]AuditEntry, 0, len(es))
		for _, e := range es {
			out = append(out, AuditEntry{Seq: e.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action, Subject: e.Subject, Detail: e.Detail, Hash: e.Hash})
		}
		httpjson.JSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/audit/head", func(w http.ResponseWriter, r *http.Request) {
		seq, hash, err := s.AuditHead(r.Context())
		if err != nil {
			httpjson.Error(w, r, log, err)
			return
		}
		httpjson.JSON(w, http.StatusOK, AuditHeadResponse{Seq: seq, Hash: hash})
	})
	return guard(log, mux, RoleReader)
}

// ParseAuditQuery reads "after=SEQ&limit=N" strictly: no other keys, no
// repeats, after ≥ 0 (default 0), 1 ≤ limit ≤ MaxAuditPage (default
// DefaultAuditPage).
func ParseAuditQuery(raw string) (after int64, limit int, err error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return 0, 0, problem.New(problem.Invalid, "malformed query string")
	}
	limit = DefaultAuditPage
	for k, vs := range q {
		if len(vs) != 1 {
			return 0, 0, problem.New(problem.Invalid, "query parameter %q given %d times", k, len(vs))
		}
		switch k {
		case "after":
			after, err = strconv.ParseInt(vs[0], 10, 64)
			if err != nil || after < 0 {
				return 0, 0, problem.New(problem.Invalid, "after=%q: want a sequence number ≥ 0", vs[0])
			}
		case "limit":
			limit, err = strconv.Atoi(vs[0])
			if err != nil || limit < 1 || limit > MaxAuditPage {
				return 0, 0, problem.New(problem.Invalid, "limit=%q: want 1 to %d", vs[0], MaxAuditPage)
			}
		default:
			return 0, 0, problem.New(problem.Invalid, "unknown query parameter %q (want after, limit)", k)
		}
	}
	return after, limit, nil
}

// guard refuses requests whose Principal does not satisfy roles, in case a
// handler is mounted without Require.
func guard(log *slog.Logger, next http.Handler, roles ...Role) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := From(r.Context())
		switch {
		case !ok:
			log.Error("handler reached without a principal: mount it behind auth.Require", "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="trustpool"`)
			httpjson.Error(w, r, log, problem.New(problem.Unauthorized, "a valid bearer token is required"))
		case !p.Role.satisfies(roles):
			httpjson.Error(w, r, log, problem.New(problem.Forbidden, "role %s may not do this (needs %s)", p.Role, roleList(roles)))
		default:
			next.ServeHTTP(w, r)
		}
	})
}
