// Package auth decides who is calling trustpool's HTTP APIs and what they may
// do. A caller presents a credential: a bearer token (`Authorization: Bearer
// TOKEN`) or, for OpenStack Nova's legacy TrustedFilter, the `x-auth-blob`
// header. Tokens carry one role — admin, reader, scheduler or agent — and are
// stored only as their SHA-256: the secret is shown once, when it is made, and
// a copy of the database does not let anyone call the API.
//
// What is trusted: the store's token rows (whoever can write the database can
// mint tokens anyway), the bootstrap admin token and the Nova blob read from
// the server's state directory, and the TCP peer address of the connection.
// Nothing else in a request is: headers such as X-Forwarded-For are ignored,
// because the server terminates TLS itself and a client can write any header.
//
// Failed authentication is rate limited per client address, so guessing
// tokens is slow; Limiter also serves other per-client limits (enrollment).
// The token and audit-log HTTP handlers live here too, so that every change
// to a credential is recorded in the audit log by the code that makes it.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"trustpool/internal/httpjson"
	"trustpool/internal/problem"
	"trustpool/internal/store"
)

// Role is what a credential may do.
type Role string

// The roles. Admin satisfies every requirement.
const (
	RoleAdmin     Role = "admin"     // references, policies, hosts, tokens
	RoleReader    Role = "reader"    // read-only operator views and the audit log
	RoleScheduler Role = "scheduler" // pool queries only (filter, PollHosts)
	RoleAgent     Role = "agent"     // trust agent calls that are not certificate-bound
)

// Roles lists every role, for help texts and validation messages.
func Roles() []Role { return []Role{RoleAdmin, RoleReader, RoleScheduler, RoleAgent} }

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool { return slices.Contains(Roles(), r) }

// satisfies reports whether r may do what needs one of want. Admin may do
// everything; an empty want admits admin only, so a forgotten role list
// fails closed.
func (r Role) satisfies(want []Role) bool {
	return r == RoleAdmin || (r.Valid() && slices.Contains(want, r))
}

// Principal is an authenticated caller.
type Principal struct {
	Name string // the token's name, or BootstrapName / NovaName
	Role Role
}

// Names of the principals whose credentials live in files rather than in
// the store. Tokens may not take these names, so the audit log's actors are
// unambiguous.
const (
	BootstrapName = "bootstrap" // the admin token in STATE/admin.token
	NovaName      = "nova"      // the x-auth-blob in STATE/nova-auth-blob
)

// Errors from Authenticate. Anything else it returns means no decision could
// be made (the store failed).
var (
	ErrNoCredential  = errors.New("no credential")
	ErrBadCredential = errors.New("invalid credential")
)

// TokenLookup finds a token by the SHA-256 of its secret (store.Store does).
type TokenLookup interface {
	TokenByHash(ctx context.Context, hash []byte) (store.Token, error)
}

// Rate is a token-bucket rate: PerSecond on average, Burst at once.
type Rate struct {
	PerSecond float64
	Burst     int
}

// PerMinute is n events a minute with the given burst.
func PerMinute(n float64, burst int) Rate { return Rate{PerSecond: n / 60, Burst: burst} }

// Config configures an Authenticator.
type Config struct {
	// Store holds the API tokens; without it only the file-based
	// credentials work.
	Store TokenLookup
	// Bootstrap is the admin token from STATE/admin.token; empty disables it.
	Bootstrap string
	// NovaBlob is the x-auth-blob Nova sends (STATE/nova-auth-blob); it
	// authenticates as a scheduler. Empty disables the header.
	NovaBlob string
	// FailLimit bounds failed authentications per client address; zero
	// means 10 a minute after a burst of 20. A token has 256 random bits, so
	// the limit is not what makes guessing hopeless: it keeps guessers from
	// loading the store, and the log shows them. A non-zero Rate needs
	// PerSecond > 0 and Burst ≥ 1 (New panics otherwise, as NewLimiter does).
	FailLimit Rate
	Now       func() time.Time // default time.Now
	Log       *slog.Logger     // default discards
}

// Authenticator checks credentials. It is safe for concurrent use.
type Authenticator struct {
	store TokenLookup
	// Hashes of the file-based credentials, compared in constant time;
	// hashing first also hides their lengths.
	bootstrap, nova [sha256.Size]byte
	hasBootstrap    bool
	hasNova         bool
	fails           *Limiter // failed authentications per client address
	log             *slog.Logger
}

// New builds an Authenticator.
func New(cfg Config) *Authenticator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.FailLimit == (Rate{}) {
		cfg.FailLimit = PerMinute(10, 20)
	}
	return &Authenticator{
		store:        cfg.Store,
		bootstrap:    sha256.Sum256([]byte(cfg.Bootstrap)),
		nova:         sha256.Sum256([]byte(cfg.NovaBlob)),
		hasBootstrap: cfg.Bootstrap != "",
		hasNova:      cfg.NovaBlob != "",
		fails:        NewLimiter(cfg.FailLimit.PerSecond, cfg.FailLimit.Burst, cfg.Now),
		log:          cfg.Log,
	}
}

// maxToken bounds the bearer token we hash and look up; ours are 46 bytes.
const maxToken = 256

// Authenticate identifies the caller of r. A bearer token is checked against
// the bootstrap token, then looked up by its hash in the store; a revoked
// token, or one whose stored role is unknown, is invalid. Without an
// Authorization header, an x-auth-blob header equal to the Nova blob is a
// scheduler. It returns ErrNoCredential, ErrBadCredential (both wrapped) or
// a store error.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	authz := r.Header.Values("Authorization")
	blob := r.Header.Values("X-Auth-Blob")
	switch {
	case len(authz) == 0 && len(blob) == 0:
		return Principal{}, ErrNoCredential
	case len(authz) > 1 || (len(authz) == 0 && len(blob) > 1):
		return Principal{}, fmt.Errorf("%w: repeated credential header", ErrBadCredential)
	case len(authz) == 0:
		sum := sha256.Sum256([]byte(blob[0]))
		if !a.hasNova || subtle.ConstantTimeCompare(sum[:], a.nova[:]) != 1 {
			return Principal{}, fmt.Errorf("%w: wrong x-auth-blob", ErrBadCredential)
		}
		return Principal{Name: NovaName, Role: RoleScheduler}, nil
	}
	tok, err := bearer(authz[0])
	if err != nil {
		return Principal{}, err
	}
	sum := sha256.Sum256([]byte(tok))
	if subtle.ConstantTimeCompare(sum[:], a.bootstrap[:]) == 1 && a.hasBootstrap {
		return Principal{Name: BootstrapName, Role: RoleAdmin}, nil
	}
	if a.store == nil {
		return Principal{}, fmt.Errorf("%w: no token store configured", ErrBadCredential)
	}
	// The lookup is by hash: its timing can at most reveal something about
	// the hash of a wrong guess, never about a stored token's secret.
	t, err := a.store.TokenByHash(r.Context(), sum[:])
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Principal{}, fmt.Errorf("%w: unknown token", ErrBadCredential)
	case err != nil:
		return Principal{}, fmt.Errorf("authenticate: %w", err)
	case t.Revoked():
		return Principal{}, fmt.Errorf("%w: token %q was revoked", ErrBadCredential, t.Name)
	case !Role(t.Role).Valid():
		a.log.Warn("token with unknown role refused", "token", t.Name, "role", t.Role)
		return Principal{}, fmt.Errorf("%w: token %q has unknown role", ErrBadCredential, t.Name)
	}
	return Principal{Name: t.Name, Role: Role(t.Role)}, nil
}

// bearer extracts the token from an Authorization header value. The scheme
// is case-insensitive (RFC 9110, section 11.1).
func bearer(h string) (string, error) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: not a bearer token", ErrBadCredential)
	}
	tok = strings.Trim(tok, " ")
	if tok == "" || len(tok) > maxToken {
		return "", fmt.Errorf("%w: empty or oversized bearer token", ErrBadCredential)
	}
	return tok, nil
}

// Require returns middleware that admits callers holding one of roles (admin
// is always admitted; no roles admits admin only). It answers 429 while the
// client's address has used up its failed-authentication allowance — even
// for a good credential, or the limit would not slow a guesser down — 401
// with WWW-Authenticate for a missing or bad credential, and 403 for a
// credential without the role. The Principal reaches the handler through
// the request context (From).
func (a *Authenticator) Require(roles ...Role) func(http.Handler) http.Handler {
	want := slices.Clone(roles)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			client := ClientKey(r)
			if ok, wait := a.fails.take(client, false); !ok {
				tooMany(w, wait, "too many failed authentications from this address")
				return
			}
			p, err := a.Authenticate(r)
			switch {
			case errors.Is(err, ErrNoCredential), errors.Is(err, ErrBadCredential):
				if errors.Is(err, ErrBadCredential) {
					// Only guesses count: a request without any credential
					// (a browser, a probe) tries nothing.
					a.fails.Allow(client)
					a.log.Info("authentication failed", "client", client, "method", r.Method, "path", r.URL.Path, "err", err)
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="trustpool"`)
				httpjson.Error(w, r, a.log, problem.New(problem.Unauthorized, "a valid bearer token is required"))
			case err != nil:
				httpjson.Error(w, r, a.log, err)
			case !p.Role.satisfies(want):
				httpjson.Error(w, r, a.log, problem.New(problem.Forbidden, "role %s may not do this (needs %s)", p.Role, roleList(want)))
			default:
				next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
			}
		})
	}
}

func roleList(roles []Role) string {
	s := make([]string, 0, len(roles)+1)
	for _, r := range roles {
		if r != RoleAdmin {
			s = append(s, string(r))
		}
	}
	return strings.Join(append(s, string(RoleAdmin)), " or ")
}

// tooMany writes a 429 with Retry-After in whole seconds (at least 1).
func tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	secs := max(1, int64((wait+time.Second-1)/time.Second))
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	httpjson.JSON(w, http.StatusTooManyRequests, httpjson.ErrorBody{Error: fmt.Sprintf("%s; retry in %d s", msg, secs)})
}

// principalKey is the context key of the request's Principal.
type principalKey struct{}

// WithPrincipal returns ctx carrying p; Require does this for its handler.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// From returns the Principal that Require put in ctx.
func From(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// tokenPrefix marks trustpool tokens so that secret scanners and people can
// recognise a leaked one.
const tokenPrefix = "tpt_"

// NewToken returns a new random token (256 bits from crypto/rand) and the
// hash under which the store keeps it.
func NewToken() (token string, hash []byte) {
	raw := make([]byte, 32)
	// crypto/rand.Read never fails (it crashes the program instead).
	_, _ = rand.Read(raw)
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	return token, HashToken(token)
}

// HashToken is the stored form of a token: its SHA-256. A plain hash is
// enough (no salt, no slow KDF) because tokens are random, not chosen.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// tokenName is what a token may be called: it appears in the audit log and
// in URLs.
var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidTokenName reports why name cannot name a token, or nil.
func ValidTokenName(name string) error {
	if !tokenName.MatchString(name) {
		return fmt.Errorf("token name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	if strings.EqualFold(name, BootstrapName) || strings.EqualFold(name, NovaName) {
		return fmt.Errorf("token name %q is reserved", name)
	}
	return nil
}
