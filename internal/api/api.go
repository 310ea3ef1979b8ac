// Package api serves trustpool's native REST API under /v1: enrollment and
// hello for agents; hosts, verdicts, known-good values and join tokens for
// operators; the pool and the filter for schedulers. Handlers decode strictly
// with size limits and leave status codes and messages to package httpjson.
package api

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"trustpool/internal/auth"
	"trustpool/internal/enroll"
	"trustpool/internal/evidence"
	"trustpool/internal/filter"
	"trustpool/internal/httpjson"
	"trustpool/internal/integrity"
	"trustpool/internal/knowngood"
	"trustpool/internal/policy"
	"trustpool/internal/problem"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// maxBody bounds every API request body.
const maxBody = 64 << 10

// Store is what the API reads and writes directly.
type Store interface {
	ListHosts(ctx context.Context) ([]store.Host, error)
	GetHost(ctx context.Context, name string) (store.Host, error)
	SetHostPolicy(ctx context.Context, name, policy string, labels map[string]string, now time.Time) error
	SetHostMode(ctx context.Context, name string, mode store.HostMode, now time.Time) error
	CreateJoinToken(ctx context.Context, t store.JoinToken) error
	LatestEvidence(ctx context.Context, host string) (store.EvidenceRecord, error)
	History(ctx context.Context, host string, limit int) ([]verdict.Verdict, error)
	Append(ctx context.Context, e store.Entry) error
}

// KnownGood is the known-good database (package knowngood's DB): the set
// in force, previews, changes and golden-host import.
type KnownGood interface {
	Current() *knowngood.Set
	Preview(ctx context.Context, c *policy.Change) ([]knowngood.Change, error)
	Apply(ctx context.Context, actor string, c *policy.Change) ([]knowngood.Change, error)
	Golden(ctx context.Context, host, name, policy string, meta map[string]string) (*policy.Change, error)
}

// IdentityVerifier checks that an agent's certificate chain is the one
// pinned for its host (pki.CA.VerifyAgent).
type IdentityVerifier func(chain []*x509.Certificate, host string, pinned []byte, usage x509.ExtKeyUsage) error

// Config wires the API.
type Config struct {
	Store      Store
	Enroll     *enroll.Service
	Integrity  *integrity.Service
	KnownGood  KnownGood
	VerifyPeer IdentityVerifier
	// Auth checks bearer tokens (and the Nova blob) and their roles.
	Auth *auth.Authenticator
	// EnrollLimit bounds enrollment requests per client address.
	EnrollLimit *auth.Limiter
	// Tokens and Audit serve /v1/tokens and /v1/audit (package auth).
	Tokens, Audit http.Handler
	// AllowIPNames lets hosts be named by IP address (as enrollment does).
	AllowIPNames bool
	// JoinTokenTTL is the default lifetime of a join token (default 24 h).
	JoinTokenTTL time.Duration
	Now          func() time.Time
	Log          *slog.Logger
}

// API is the /v1 handler.
type API struct {
	cfg    Config
	mux    *http.ServeMux
	routes []string
}

// New builds the API.
func New(cfg Config) *API {
	if cfg.JoinTokenTTL <= 0 {
		cfg.JoinTokenTTL = 24 * time.Hour
	}
	a := &API{cfg: cfg, mux: http.NewServeMux()}
	admin, reader, scheduler := a.role(auth.RoleAdmin), a.role(auth.RoleReader), a.role(auth.RoleScheduler)
	limited := func(h http.HandlerFunc) http.Handler { return h }
	if cfg.EnrollLimit != nil {
		limited = func(h http.HandlerFunc) http.Handler { return cfg.EnrollLimit.Middleware(auth.ClientKey)(h) }
	}
	m := a.handle
	// The API's description: public, like the routes it describes.
	m("GET "+OpenAPIPath, http.HandlerFunc(serveOpenAPI))
	// Agents: a join token, an approval or the agent's pinned certificate.
	m("POST /v1/enroll", limited(a.enrollBegin))
	m("POST /v1/enroll/activate", limited(a.enrollActivate))
	m("POST /v1/enroll/poll", limited(a.enrollPoll))
	m("POST /v1/hello", limited(a.hello))
	// Push agents: their pinned certificate; limited per host, not per
	// address (a remote site's nodes share one NAT address).
	m("POST /v1/push/challenge", http.HandlerFunc(a.pushChallenge))
	m("POST /v1/push/evidence", http.HandlerFunc(a.pushEvidence))
	m("POST /v1/push/wait", http.HandlerFunc(a.pushWait))
	// Operators.
	m("GET /v1/hosts", reader(a.listHosts))
	m("GET /v1/hosts/{name}", reader(a.getHost))
	m("GET /v1/hosts/{name}/evidence", reader(a.getEvidence))
	m("PATCH /v1/hosts/{name}", admin(a.patchHost))
	m("DELETE /v1/hosts/{name}", admin(a.deleteHost))
	m("GET /v1/pending", reader(a.listPending))
	m("POST /v1/hosts/{name}/approve", admin(a.approveHost))
	m("POST /v1/hosts/{name}/attest", admin(a.attestHost))
	m("POST /v1/join-tokens", admin(a.createJoinToken))
	m("GET /v1/references", reader(a.listReferences))
	m("PUT /v1/references/{name}", admin(a.putReference))
	m("DELETE /v1/references/{name}", admin(a.retireReference))
	m("GET /v1/policies", reader(a.listPolicies))
	m("PUT /v1/policies/{name}", admin(a.putPolicy))
	m("POST /v1/preview", reader(a.preview))
	m("POST /v1/apply", admin(a.apply))
	m("POST /v1/golden", admin(a.golden))
	if cfg.Tokens != nil {
		m("POST /v1/tokens", admin(cfg.Tokens.ServeHTTP))
		m("GET /v1/tokens", admin(cfg.Tokens.ServeHTTP))
		m("DELETE /v1/tokens/{name}", admin(cfg.Tokens.ServeHTTP))
	}
	if cfg.Audit != nil {
		m("GET /v1/audit", reader(cfg.Audit.ServeHTTP))
		m("GET /v1/audit/head", reader(cfg.Audit.ServeHTTP))
	}
	// Schedulers read the pool; they never cause a quote.
	m("GET /v1/pool", scheduler(a.pool))
	m("POST /v1/filter", scheduler(a.filter))
	return a
}

// handle mounts h at pattern and remembers the pattern (Routes).
func (a *API) handle(pattern string, h http.Handler) {
	a.mux.Handle(pattern, h)
	a.routes = append(a.routes, pattern)
}

// Routes lists every pattern the API serves ("METHOD /path").
func (a *API) Routes() []string { return slices.Clone(a.routes) }

// role wraps a handler so that only principals with that role (or admin)
// reach it.
func (a *API) role(r auth.Role) func(http.HandlerFunc) http.Handler {
	return func(h http.HandlerFunc) http.Handler { return a.cfg.Auth.Require(r)(h) }
}

// actor names the authenticated principal, for the audit log.
func actor(r *http.Request) string {
	if p, ok := auth.From(r.Context()); ok {
		return p.Name
	}
	return "anonymous"
}

// audit appends an admin action to the tamper-evident audit log.
func (a *API) audit(r *http.Request, action, subject string, detail any) error {
	var b []byte
	if detail != nil {
		var err error
		if b, err = json.Marshal(detail); err != nil {
			return err
		}
	}
	if err := a.cfg.Store.Append(r.Context(), store.Entry{Time: a.cfg.Now(), Actor: actor(r), Action: action, Subject: subject, Detail: b}); err != nil {
		return fmt.Errorf("audit %s %s: %w", action, subject, err)
	}
	return nil
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpjson.Error(w, r, a.cfg.Log, err)
}

func (a *API) enrollBegin(w http.ResponseWriter, r *http.Request) {
	var req evidence.EnrollRequest
	if err := httpjson.Decode(w, r, maxBody, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	cred, err := a.cfg.Enroll.Begin(r.Context(), &req, auth.ClientKey(r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpjson.JSON(w, http.StatusOK, cred)
}

func (a *API) enrollActivate(w http.ResponseWriter, r *http.Request) {
	var act evidence.EnrollActivation
	if err := httpjson.Decode(w, r, 4<<10, &act); err != nil {
		a.fail(w, r, err)
		return
	}
	adm, err := a.cfg.Enroll.Activate(r.Context(), &act)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if adm.State == evidence.EnrollAdmitted {
		a.cfg.Integrity.Hello(adm.Host)
	}
	httpjson.JSON(w, http.StatusOK, adm)
}

// enrollPoll is a pending agent asking whether it was approved: 202 while
// it waits, 200 with its certificate once.
func (a *API) enrollPoll(w http.ResponseWriter, r *http.Request) {
	var p evidence.EnrollPoll
	if err := httpjson.Decode(w, r, 1<<10, &p); err != nil {
		a.fail(w, r, err)
		return
	}
	adm, err := a.cfg.Enroll.Poll(r.Context(), &p)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if adm.State == evidence.EnrollPending {
		httpjson.JSON(w, http.StatusAccepted, adm)
		return
	}
	httpjson.JSON(w, http.StatusOK, adm)
}

// hello is an agent saying it (re)started: attest it now. Only the agent
// holding the host's certificate can ask, so hello cannot be used to make
// the server hammer a node.
func (a *API) hello(w http.ResponseWriter, r *http.Request) {
	h, ok := a.agentOfBody(w, r)
	if !ok {
		return
	}
	a.cfg.Integrity.Hello(h.Name)
	w.WriteHeader(http.StatusAccepted)
}

// HostView is a host as the API shows it.
type HostView struct {
	Name    string            `json:"name"`
	State   store.HostState   `json:"state"`
	URL     string            `json:"url"`
	Mode    store.HostMode    `json:"mode"`
	Labels  map[string]string `json:"labels,omitempty"`
	Verdict *PoolEntry        `json:"verdict,omitempty"`
	History []HistoryView     `json:"history,omitempty"`
}

// HistoryView is one level change.
type HistoryView struct {
	Level   verdict.Level    `json:"trust_lvl"`
	VTime   time.Time        `json:"vtime"`
	Reasons []verdict.Reason `json:"reasons,omitempty"`
}

func (a *API) view(h store.Host) HostView {
	v := HostView{Name: h.Name, State: h.State, URL: h.URL, Mode: h.Mode, Labels: h.Labels}
	if e, ok := a.entry(h.Name); ok {
		v.Verdict = &e
	}
	return v
}

func (a *API) listHosts(w http.ResponseWriter, r *http.Request) {
	hosts, err := a.cfg.Store.ListHosts(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]HostView, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, a.view(h))
	}
	httpjson.JSON(w, http.StatusOK, out)
}

func (a *API) host(w http.ResponseWriter, r *http.Request) (store.Host, bool) {
	name := strings.ToLower(r.PathValue("name"))
	h, err := a.cfg.Store.GetHost(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		err = problem.New(problem.NotFound, "no host %q", name)
	}
	if err != nil {
		a.fail(w, r, err)
		return h, false
	}
	return h, true
}

func (a *API) getHost(w http.ResponseWriter, r *http.Request) {
	h, ok := a.host(w, r)
	if !ok {
		return
	}
	v := a.view(h)
	hist, err := a.cfg.Store.History(r.Context(), h.Name, 50)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	for _, e := range hist {
		v.History = append(v.History, HistoryView{Level: e.Level, VTime: e.VTime, Reasons: e.Reasons})
	}
	httpjson.JSON(w, http.StatusOK, v)
}

func (a *API) deleteHost(w http.ResponseWriter, r *http.Request) {
	h, ok := a.host(w, r)
	if !ok {
		return
	}
	// One transition: the host, its audit entry and its move to unknown.
	if err := a.cfg.Integrity.Remove(r.Context(), h.Name, actor(r)); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// approveHost admits a pending TPM under its name; the body names the EK
// fingerprint approved ({"ek_fingerprint": "hex"}, from GET /v1/pending).
func (a *API) approveHost(w http.ResponseWriter, r *http.Request) {
	var req struct {
		EKFingerprint string `json:"ek_fingerprint"`
	}
	if err := httpjson.Decode(w, r, 1<<10, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	name, err := a.cfg.Enroll.Approve(r.Context(), r.PathValue("name"), req.EKFingerprint, actor(r))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	h, err := a.cfg.Store.GetHost(r.Context(), name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.cfg.Integrity.Hello(h.Name)
	httpjson.JSON(w, http.StatusOK, a.view(h))
}

func (a *API) listPending(w http.ResponseWriter, r *http.Request) {
	ps, err := a.cfg.Enroll.Pending(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpjson.JSON(w, http.StatusOK, ps)
}

func (a *API) attestHost(w http.ResponseWriter, r *http.Request) {
	h, ok := a.host(w, r)
	if !ok {
		return
	}
	if h.State != store.HostActive {
		a.fail(w, r, problem.New(problem.Conflict, "host %s is %s: approve it first", h.Name, h.State))
		return
	}
	v, err := a.cfg.Integrity.Attest(r.Context(), h.Name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpjson.JSON(w, http.StatusOK, entryOf(h.Name, v, v.At(a.cfg.Now())))
}

func (a *API) createJoinToken(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Host string `json:"host"`
		TTL  string `json:"ttl,omitempty"` // Go duration, default 24h
	}
	if err := httpjson.Decode(w, r, 1<<10, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	host, err := evidence.CanonicalHostName(req.Host, a.cfg.AllowIPNames)
	if err != nil {
		a.fail(w, r, problem.Wrap(problem.Invalid, err, "%v", err))
		return
	}
	req.Host = host
	ttl := a.cfg.JoinTokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 30*24*time.Hour {
			a.fail(w, r, problem.New(problem.Invalid, "ttl %q: want a duration up to 720h", req.TTL))
			return
		}
		ttl = d
	}
	tok := enroll.NewToken()
	now := a.cfg.Now()
	if err := a.cfg.Store.CreateJoinToken(r.Context(), store.JoinToken{Hash: enroll.TokenHash(tok), Host: req.Host, ExpiresAt: now.Add(ttl), CreatedAt: now}); err != nil {
		a.fail(w, r, err)
		return
	}
	if err := a.audit(r, "join-token.create", req.Host, map[string]any{"expires": now.Add(ttl).UTC()}); err != nil {
		a.fail(w, r, err)
		return
	}
	httpjson.JSON(w, http.StatusCreated, map[string]any{"host": req.Host, "token": tok, "expires": now.Add(ttl).UTC()})
}

// PoolEntry is one host in the pool: the OpenAttestation keys plus reasons.
type PoolEntry struct {
	Host    string           `json:"host_name"`
	Level   verdict.Level    `json:"trust_lvl"`
	VTime   string           `json:"vtime"`
	Expiry  string           `json:"expiry,omitempty"`
	Policy  string           `json:"policy,omitempty"`
	Reasons []verdict.Reason `json:"reasons"`
}

// Pool is the pool at a glance.
type Pool struct {
	Hosts []PoolEntry `json:"hosts"`
}

func entryOf(host string, v verdict.Verdict, level verdict.Level) PoolEntry {
	e := PoolEntry{Host: host, Level: level, VTime: v.VTime.UTC().Format(time.RFC3339), Policy: v.Policy, Reasons: v.Reasons}
	if !v.Expiry.IsZero() {
		e.Expiry = v.Expiry.UTC().Format(time.RFC3339)
	}
	if level == verdict.Unknown && v.Level != verdict.Unknown && !v.VTime.IsZero() {
		e.Reasons = append(slices.Clone(v.Reasons), verdict.Reason{Code: verdict.CodeExpired,
			Message: fmt.Sprintf("the %s verdict of %s expired at %s", v.Level, e.VTime, e.Expiry)})
	}
	if e.Reasons == nil {
		e.Reasons = []verdict.Reason{}
	}
	return e
}

func (a *API) entry(host string) (PoolEntry, bool) {
	v, ok := a.cfg.Integrity.Cache().Verdict(host)
	if !ok {
		return PoolEntry{}, false
	}
	return entryOf(host, v, v.At(a.cfg.Now())), true
}

// Verdicts are the latest verdicts by host (the recorder's cache).
type Verdicts interface {
	Verdict(host string) (verdict.Verdict, bool)
}

// PoolOf returns every enrolled host's entry, sorted by name; hosts never
// attested are unknown.
func PoolOf(ctx context.Context, s Store, c Verdicts, now time.Time) (Pool, error) {
	hosts, err := s.ListHosts(ctx)
	if err != nil {
		return Pool{}, err
	}
	p := Pool{Hosts: make([]PoolEntry, 0, len(hosts))}
	for _, h := range hosts {
		v, ok := c.Verdict(h.Name)
		if !ok {
			p.Hosts = append(p.Hosts, PoolEntry{Host: h.Name, Level: verdict.Unknown, VTime: now.UTC().Format(time.RFC3339),
				Reasons: []verdict.Reason{{Code: verdict.CodeNotAttested, Message: fmt.Sprintf("host is %s and was never attested", h.State)}}})
			continue
		}
		p.Hosts = append(p.Hosts, entryOf(h.Name, v, v.At(now)))
	}
	slices.SortFunc(p.Hosts, func(a, b PoolEntry) int { return strings.Compare(a.Host, b.Host) })
	return p, nil
}

// poolStoreWait bounds the pool's read of the host list: a store that does
// not answer (a replica cut off from PostgreSQL) makes the pool a 503 at
// once, not a request hanging until the client gives up. The schedulers'
// paths (PollHosts, /v1/filter) answer from the verdict cache alone, where
// verdicts not renewed expire to unknown.
const poolStoreWait = 2 * time.Second

func (a *API) pool(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), poolStoreWait)
	defer cancel()
	p, err := PoolOf(ctx, a.cfg.Store, a.cfg.Integrity.Cache(), a.cfg.Now())
	if err != nil && ctx.Err() != nil && r.Context().Err() == nil {
		httpjson.JSON(w, http.StatusServiceUnavailable, httpjson.ErrorBody{Error: fmt.Sprintf(
			"the store did not answer within %v: the pool cannot be listed (PollHosts and /v1/filter answer from the verdicts held)", poolStoreWait)})
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpjson.JSON(w, http.StatusOK, p)
}

func (a *API) filter(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ExtraSpecs map[string]string `json:"extra_specs"`
		Hosts      []string          `json:"hosts"`
	}
	if err := httpjson.Decode(w, r, 4<<20, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	pass, rejected := filter.Filter(req.ExtraSpecs, req.Hosts, a.cfg.Integrity.Cache().Level)
	if pass == nil {
		pass = []string{}
	}
	if rejected == nil {
		rejected = []filter.Rejection{}
	}
	httpjson.JSON(w, http.StatusOK, map[string]any{"hosts": pass, "rejected": rejected})
}
