// Package enroll admits a node's TPM. The server proves that the node's
// attestation key (AK) lives in the same TPM as its endorsement key (EK) by
// credential activation: it encrypts a secret to the EK, bound to the AK's
// name (TPM2_MakeCredential, done here in pure Go), and only that TPM can
// recover it (TPM2_ActivateCredential). An AK that did not pass is never
// used.
//
// Activation proves a TPM, not a right to a name. A host is admitted, and
// gets a certificate, only by a one-time join token bound to its name, by
// an EK certificate from a TPM vendor (when the operator lets that admit),
// by being the TPM already admitted under that name, or by an operator's
// approval naming its EK. Anyone else waits as pending, owns nothing, and
// can only poll; pending requests expire and are capped.
package enroll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/go-tpm/tpm2"

	"trustpool/internal/ekcert"
	"trustpool/internal/evidence"
	"trustpool/internal/pki"
	"trustpool/internal/problem"
	"trustpool/internal/store"
	"trustpool/internal/verify"
)

// TTL bounds how long a credential may wait for activation.
const TTL = 5 * time.Minute

// Store is what enrollment needs from storage.
type Store interface {
	GetHost(ctx context.Context, name string) (store.Host, error)
	HostByEK(ctx context.Context, ekHash []byte) (store.Host, error)
	AdmitHost(ctx context.Context, a store.Admission) error
	CreateEnrollment(ctx context.Context, e store.Enrollment) error
	TakeEnrollment(ctx context.Context, id string) (store.Enrollment, error)
	CheckJoinToken(ctx context.Context, hash []byte, host string, now time.Time) error
	CountWaiting(ctx context.Context, now time.Time) (int, error)
	PutPending(ctx context.Context, p store.Pending) error
	GetPending(ctx context.Context, host string, ekHash []byte, now time.Time) (store.Pending, error)
	ListPending(ctx context.Context, now time.Time) ([]store.Pending, error)
	PollPending(ctx context.Context, pollHash []byte, now time.Time) (store.Pending, error)
	DeleteExpiredEnrollments(ctx context.Context, now time.Time) (int, error)
}

// EKCertCheck verifies an EK certificate (DER) for the EK public area
// against the TPM vendors' CAs (package ekcert).
type EKCertCheck func(certDER, ekPublic []byte, now time.Time) error

// Config configures enrollment.
type Config struct {
	Store Store
	CA    *pki.CA
	Now   func() time.Time
	// Reserved are the server's own names: no host may enroll under them.
	Reserved []string
	// AllowIPNames lets hosts be named by IP address.
	AllowIPNames bool
	// EKCheck, when set, verifies every EK certificate an agent presents;
	// RequireEKCert refuses TPMs without one; EKCertAdmits admits a TPM
	// whose EK certificate verifies, without a token or an approval.
	EKCheck       EKCertCheck
	RequireEKCert bool
	EKCertAdmits  bool
	// PendingTTL is how long a request waits for approval (default 1 h).
	PendingTTL time.Duration
	// MaxWaiting caps enrollments in flight plus pending requests that
	// no join token backs (default 10,000); beyond it requests get 429.
	MaxWaiting int
	// SweepEvery is how often Run deletes what expired (default 1 min).
	SweepEvery time.Duration
	// Outcome, when set, is told of every enrollment step's outcome:
	// "admitted", "pending" or "approved", or "refused" with the problem's
	// kind, or "error" (no decision: the store failed).
	Outcome func(outcome, kind string)
	Log     *slog.Logger
}

// Service runs enrollments.
type Service struct {
	cfg      Config
	reserved map[string]bool
}

// New returns an enrollment service.
func New(cfg Config) *Service {
	if cfg.PendingTTL <= 0 {
		cfg.PendingTTL = time.Hour
	}
	if cfg.MaxWaiting <= 0 {
		cfg.MaxWaiting = 10_000
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Service{cfg: cfg, reserved: map[string]bool{}}
	for _, n := range cfg.Reserved {
		if c, err := evidence.CanonicalHostName(n, true); err == nil {
			s.reserved[c] = true
		}
	}
	return s
}

func (s *Service) now() time.Time { return s.cfg.Now() }

// count tells Outcome how a step ended: with err, or with a (nil for a
// first step that succeeded, which is not an outcome yet).
func (s *Service) count(a *evidence.Admitted, err error) {
	switch {
	case s.cfg.Outcome == nil:
	case err != nil && problem.KindOf(err) != 0:
		s.cfg.Outcome("refused", kindName(problem.KindOf(err)))
	case err != nil:
		s.cfg.Outcome("error", "")
	case a != nil && a.State == evidence.EnrollAdmitted:
		s.cfg.Outcome("admitted", "")
	case a != nil && a.State == evidence.EnrollPending:
		s.cfg.Outcome("pending", "")
	}
}

// kindName names a problem kind for the outcome's label.
func kindName(k problem.Kind) string {
	switch k {
	case problem.Invalid:
		return "invalid"
	case problem.Unauthorized:
		return "unauthorized"
	case problem.Forbidden:
		return "forbidden"
	case problem.NotFound:
		return "not_found"
	case problem.Conflict:
		return "conflict"
	case problem.TooLarge:
		return "too_large"
	case problem.TooMany:
		return "too_many"
	}
	return "other"
}

// Begin checks a request from source (the client's address) and returns
// the credential the agent's TPM must activate. Its errors reveal nothing
// about which names are enrolled to a caller without that name's join
// token.
func (s *Service) Begin(ctx context.Context, req *evidence.EnrollRequest, source string) (_ *evidence.EnrollCredential, err error) {
	defer func() { s.count(nil, err) }()
	name, err := evidence.CanonicalHostName(req.Host, s.cfg.AllowIPNames)
	if err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "enrollment request: %v", err)
	}
	req.Host = name
	if s.reserved[name] {
		return nil, problem.New(problem.Forbidden, "host name %q is the attestation server's", name)
	}
	ak, kem, err := parseKeys(req)
	if err != nil {
		return nil, err
	}
	if err := s.checkEKCert(req.EKCert, req.EKPublic); err != nil {
		return nil, err
	}
	var tokenHash []byte
	if req.JoinToken != "" {
		if _, err := decodeToken(req.JoinToken); err != nil {
			return nil, err
		}
		tokenHash = TokenHash(req.JoinToken)
		// Checked now so that a made-up token cannot pass the cap below;
		// consumed only on admission.
		if err := s.cfg.Store.CheckJoinToken(ctx, tokenHash, name, s.now()); err != nil {
			return nil, tokenProblem(err)
		}
	}
	if err := s.checkBinding(ctx, name, req.EKPublic, tokenHash != nil); err != nil {
		return nil, err
	}
	if tokenHash == nil {
		switch n, err := s.cfg.Store.CountWaiting(ctx, s.now()); {
		case err != nil:
			return nil, err
		case n >= s.cfg.MaxWaiting:
			return nil, problem.New(problem.TooMany, "too many enrollments are waiting; try again later")
		}
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("make secret: %w", err)
	}
	blob, enc, err := tpm2.CreateCredential(rand.Reader, kem, ak.Name(), secret)
	if err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "make credential for the endorsement key: %v", err)
	}
	id := randomID()
	sum := sha256.Sum256(secret)
	e := store.Enrollment{
		ID: id, Host: name, EKPublic: req.EKPublic, EKCert: req.EKCert, AKPublic: req.AKPublic,
		AKName: ak.Name(), URL: req.URL, CSR: req.CSR, SecretHash: sum[:], TokenHash: tokenHash,
		Source: source, ExpiresAt: s.now().Add(TTL), CreatedAt: s.now(),
	}
	if err := s.cfg.Store.CreateEnrollment(ctx, e); err != nil {
		return nil, fmt.Errorf("store enrollment of %s: %w", name, err)
	}
	return &evidence.EnrollCredential{ID: id, CredentialBlob: blob, EncryptedSecret: enc}, nil
}

// parseKeys checks a request's shape and decodes its keys: the AK must be a
// restricted signing key, the EK a restricted decryption key fixed to its
// TPM that a credential can be encrypted to.
func parseKeys(req *evidence.EnrollRequest) (*verify.AK, tpm2.LabeledEncapsulationKey, error) {
	if err := req.Validate(); err != nil {
		return nil, nil, problem.Wrap(problem.Invalid, err, "enrollment request: %v", err)
	}
	ak, err := verify.ParseAK(req.AKPublic)
	if err != nil {
		return nil, nil, problem.Wrap(problem.Invalid, err, "attestation key refused: %v", err)
	}
	ek, err := tpm2.Unmarshal[tpm2.TPMTPublic](req.EKPublic)
	if err != nil {
		return nil, nil, problem.Wrap(problem.Invalid, err, "endorsement key: cannot decode TPMT_PUBLIC")
	}
	if a := ek.ObjectAttributes; !a.FixedTPM || !a.FixedParent || !a.Restricted || !a.Decrypt || a.SignEncrypt {
		return nil, nil, problem.New(problem.Invalid, "endorsement key: not a restricted storage key fixed to its TPM")
	}
	if err := ekStrength(ek); err != nil {
		return nil, nil, problem.Wrap(problem.Invalid, err, "endorsement key: %v", err)
	}
	kem, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		return nil, nil, problem.Wrap(problem.Invalid, err, "endorsement key: unsupported: %v", err)
	}
	return ak, kem, nil
}

// ekStrength refuses EKs too small to protect a credential: RSA below
// 2048 bits, ECC below 256.
func ekStrength(ek *tpm2.TPMTPublic) error {
	switch ek.Type {
	case tpm2.TPMAlgRSA:
		if u, err := ek.Unique.RSA(); err != nil || len(u.Buffer) < 256 {
			return errors.New("RSA key smaller than 2048 bits")
		}
	case tpm2.TPMAlgECC:
		if u, err := ek.Unique.ECC(); err != nil || len(u.X.Buffer) < 32 || len(u.Y.Buffer) < 32 {
			return errors.New("ECC key smaller than 256 bits")
		}
	default:
		return fmt.Errorf("key type %#x is neither RSA nor ECC", ek.Type)
	}
	return nil
}

// checkEKCert applies the EK certificate policy. A presented certificate
// is always parsed and must certify this EK; with a vendor CA bundle it
// must also chain to a vendor's CA and not be revoked.
func (s *Service) checkEKCert(certDER, ekPublic []byte) error {
	if len(certDER) == 0 {
		if s.cfg.RequireEKCert {
			return problem.New(problem.Forbidden, "an EK certificate from a TPM vendor is required and the agent sent none")
		}
		return nil
	}
	if _, err := ekcert.Inspect(certDER, ekPublic); err != nil {
		return problem.Wrap(problem.Invalid, err, "EK certificate refused: %v", err)
	}
	if s.cfg.EKCheck == nil {
		return nil
	}
	if err := s.cfg.EKCheck(certDER, ekPublic, s.now()); err != nil {
		return problem.Wrap(problem.Forbidden, err, "EK certificate refused: %v", err)
	}
	return nil
}

// checkBinding refuses, to the holder of host's join token, an EK bound
// to another host (a TPM is one host) and a name bound to another EK.
// Anyone else learns nothing here: an EK's binding is checked once the
// caller proved it holds that EK (Activate), and a name bound to another
// EK lets a request wait as pending (never to be approved under it).
func (s *Service) checkBinding(ctx context.Context, host string, ekPublic []byte, token bool) error {
	if !token {
		return nil
	}
	if err := s.checkEKBinding(ctx, host, ekPublic); err != nil {
		return err
	}
	switch h, err := s.cfg.Store.GetHost(ctx, host); {
	case err == nil && subtle.ConstantTimeCompare(h.EKPublic, ekPublic) != 1:
		return problem.New(problem.Conflict, "host %s is bound to another endorsement key", host)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("look up host %s: %w", host, err)
	}
	return nil
}

// checkEKBinding refuses an EK bound to a host other than host.
func (s *Service) checkEKBinding(ctx context.Context, host string, ekPublic []byte) error {
	switch h, err := s.cfg.Store.HostByEK(ctx, store.EKHash(ekPublic)); {
	case err == nil && h.Name != host:
		return problem.New(problem.Conflict, "this endorsement key is bound to another host")
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("look up EK: %w", err)
	}
	return nil
}

// Activate checks the secret the agent's TPM recovered. On success the TPM
// is admitted under its name when a join token, its EK certificate, or an
// earlier admission of the same TPM says so, and the agent gets its
// certificate; otherwise it waits for an operator's approval, with nothing
// but a secret to poll with. Each enrollment can be tried once.
func (s *Service) Activate(ctx context.Context, act *evidence.EnrollActivation) (a *evidence.Admitted, err error) {
	defer func() { s.count(a, err) }()
	e, err := s.cfg.Store.TakeEnrollment(ctx, act.ID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, problem.New(problem.NotFound, "no enrollment %q in progress (unknown, expired or already tried)", act.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("take enrollment: %w", err)
	}
	if !s.now().Before(e.ExpiresAt) {
		return nil, problem.New(problem.NotFound, "enrollment %q expired", act.ID)
	}
	sum := sha256.Sum256(act.Secret)
	if subtle.ConstantTimeCompare(sum[:], e.SecretHash) != 1 {
		return nil, problem.New(problem.Forbidden, "credential activation failed: the attestation key is not in the TPM of this endorsement key")
	}
	if s.admits(ctx, &e) {
		cert, err := s.admit(ctx, store.Admission{TokenHash: e.TokenHash, Now: s.now()}, e.Host, e.EKPublic, e.EKCert, e.AKPublic, e.AKName, e.URL, e.CSR)
		if err != nil {
			return nil, err
		}
		return &evidence.Admitted{Host: e.Host, State: evidence.EnrollAdmitted, Cert: cert, CA: s.cfg.CA.CertPEM}, nil
	}
	// The caller holds this EK now: it may learn that the EK belongs to
	// another host, which no approval could change.
	if err := s.checkEKBinding(ctx, e.Host, e.EKPublic); err != nil {
		return nil, err
	}
	poll := NewToken()
	p := store.Pending{
		PollHash: TokenHash(poll), Host: e.Host, EKPublic: e.EKPublic, EKCert: e.EKCert, AKPublic: e.AKPublic,
		AKName: e.AKName, URL: e.URL, CSR: e.CSR, Source: e.Source, CreatedAt: s.now(), ExpiresAt: s.now().Add(s.cfg.PendingTTL),
	}
	if err := s.cfg.Store.PutPending(ctx, p); err != nil {
		return nil, fmt.Errorf("store pending host %s: %w", e.Host, err)
	}
	return &evidence.Admitted{Host: e.Host, State: evidence.EnrollPending, Poll: poll}, nil
}

// admits reports whether an activated enrollment admits its host without
// an operator: a join token, an EK certificate the operator lets admit, or
// the TPM already admitted under that name (a new AK or agent key).
func (s *Service) admits(ctx context.Context, e *store.Enrollment) bool {
	if e.TokenHash != nil {
		return true
	}
	if s.cfg.EKCertAdmits && len(e.EKCert) > 0 && s.cfg.EKCheck != nil && s.cfg.EKCheck(e.EKCert, e.EKPublic, s.now()) == nil {
		return true
	}
	h, err := s.cfg.Store.GetHost(ctx, e.Host)
	return err == nil && subtle.ConstantTimeCompare(h.EKPublic, e.EKPublic) == 1
}

// admit issues the host's certificate and writes the admission a (with
// the host filled in) in one transaction.
func (s *Service) admit(ctx context.Context, a store.Admission, host string, ekPub, ekCert, akPub, akName []byte, url string, csr []byte) ([]byte, error) {
	cert, err := s.cfg.CA.SignAgentCSR(csr, host)
	if err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "agent certificate request: %v", err)
	}
	now := s.now()
	a.Host = store.Host{
		Name: host, State: store.HostActive, EKPublic: ekPub, EKCert: ekCert, AKPublic: akPub,
		AKName: akName, URL: url, AgentCert: cert, CreatedAt: now, UpdatedAt: now, Mode: store.ModePull,
	}
	if url == "" { // only a push agent enrolls without a URL (EnrollRequest.Validate)
		a.Host.Mode = store.ModePush
	}
	switch err := s.cfg.Store.AdmitHost(ctx, a); {
	case errors.Is(err, store.ErrConflict):
		return nil, problem.Wrap(problem.Conflict, err, "host %s is bound to another endorsement key", host)
	case err != nil && a.TokenHash != nil && tokenError(err):
		return nil, tokenProblem(err)
	case err != nil:
		return nil, fmt.Errorf("admit host %s: %w", host, err)
	}
	return cert, nil
}

// Poll answers a pending agent: still pending, or admitted with its
// certificate (handed out once).
func (s *Service) Poll(ctx context.Context, p *evidence.EnrollPoll) (*evidence.Admitted, error) {
	if _, err := base64.RawURLEncoding.DecodeString(p.Poll); err != nil || len(p.Poll) != 43 {
		return nil, problem.New(problem.Invalid, "poll secret is malformed")
	}
	got, err := s.cfg.Store.PollPending(ctx, TokenHash(p.Poll), s.now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, problem.New(problem.NotFound, "no pending enrollment for this secret (unknown, expired or refused): enroll again")
	}
	if err != nil {
		return nil, err
	}
	if got.Cert == nil {
		return &evidence.Admitted{Host: got.Host, State: evidence.EnrollPending}, nil
	}
	return &evidence.Admitted{Host: got.Host, State: evidence.EnrollAdmitted, Cert: got.Cert, CA: s.cfg.CA.CertPEM}, nil
}

// PendingView is a pending request as an operator sees it before
// approving: enough to tell two TPMs under one name apart.
type PendingView struct {
	Host          string    `json:"host"`
	EKFingerprint string    `json:"ek_fingerprint"` // hex SHA-256 of the EK public area
	EKCertSubject string    `json:"ek_cert_subject,omitempty"`
	EKCertIssuer  string    `json:"ek_cert_issuer,omitempty"`
	AKName        string    `json:"ak_name"`
	Source        string    `json:"source"`
	URL           string    `json:"url"`
	Created       time.Time `json:"created"`
	Expires       time.Time `json:"expires"`
}

// Pending lists the requests waiting for approval.
func (s *Service) Pending(ctx context.Context) ([]PendingView, error) {
	ps, err := s.cfg.Store.ListPending(ctx, s.now())
	if err != nil {
		return nil, err
	}
	out := make([]PendingView, 0, len(ps))
	for _, p := range ps {
		v := PendingView{
			Host: p.Host, EKFingerprint: hex.EncodeToString(store.EKHash(p.EKPublic)), AKName: hex.EncodeToString(p.AKName),
			Source: p.Source, URL: p.URL, Created: p.CreatedAt.UTC(), Expires: p.ExpiresAt.UTC(),
		}
		if c, err := x509.ParseCertificate(p.EKCert); err == nil {
			v.EKCertSubject, v.EKCertIssuer = c.Subject.String(), c.Issuer.String()
		}
		out = append(out, v)
	}
	return out, nil
}

// Approve admits the TPM waiting under host whose EK has the fingerprint
// ekFingerprint (hex SHA-256 of its public area): an operator's approval
// names what it approves, so another TPM under that name is not admitted
// by it. The admission and its audit entry (by actor) are one
// transaction. It returns the host's canonical name.
func (s *Service) Approve(ctx context.Context, host, ekFingerprint, actor string) (string, error) {
	fp, err := hex.DecodeString(ekFingerprint)
	if err != nil || len(fp) != sha256.Size {
		return "", problem.New(problem.Invalid, "ek_fingerprint %q: want the 64 hex digits of the EK's SHA-256 (trustpool hosts pending)", ekFingerprint)
	}
	name, err := evidence.CanonicalHostName(host, true)
	if err != nil {
		return "", problem.Wrap(problem.Invalid, err, "%v", err)
	}
	p, err := s.cfg.Store.GetPending(ctx, name, fp, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return "", problem.New(problem.NotFound, "no pending enrollment of %s with EK %s", name, ekFingerprint)
	}
	if err != nil {
		return "", err
	}
	detail, _ := json.Marshal(map[string]string{"ek_fingerprint": hex.EncodeToString(fp)})
	audit := &store.Entry{Time: s.now(), Actor: actor, Action: "host.approve", Subject: p.Host, Detail: detail}
	_, err = s.admit(ctx, store.Admission{PendingPoll: p.PollHash, Audit: audit, Now: s.now()}, p.Host, p.EKPublic, p.EKCert, p.AKPublic, p.AKName, p.URL, p.CSR)
	if err == nil && s.cfg.Outcome != nil {
		s.cfg.Outcome("approved", "")
	}
	return name, err
}

// Run deletes expired enrollments and pending requests every SweepEvery
// until ctx ends, so that what an unauthenticated caller left behind does
// not pile up.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.SweepEvery)
	defer t.Stop()
	for {
		s.Sweep(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sweep deletes what expired by now.
func (s *Service) Sweep(ctx context.Context) {
	if _, err := s.cfg.Store.DeleteExpiredEnrollments(ctx, s.now()); err != nil && ctx.Err() == nil {
		s.cfg.Log.Error("delete expired enrollments", "err", err)
	}
}

func tokenError(err error) bool {
	return errors.Is(err, store.ErrTokenUsed) || errors.Is(err, store.ErrTokenExpired) || errors.Is(err, store.ErrTokenHost) || errors.Is(err, store.ErrNotFound)
}

func tokenProblem(err error) error {
	switch {
	case errors.Is(err, store.ErrTokenUsed):
		return problem.New(problem.Forbidden, "join token already used")
	case errors.Is(err, store.ErrTokenExpired):
		return problem.New(problem.Forbidden, "join token expired")
	case errors.Is(err, store.ErrTokenHost):
		return problem.New(problem.Forbidden, "join token was issued for another host")
	case errors.Is(err, store.ErrNotFound):
		return problem.New(problem.Forbidden, "join token unknown")
	}
	return fmt.Errorf("consume join token: %w", err)
}

// NewToken makes a join token: 32 random bytes, URL-safe base64.
func NewToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// TokenHash is how a token is stored: never in the clear.
func TokenHash(token string) []byte {
	s := sha256.Sum256([]byte(token))
	return s[:]
}

func decodeToken(t string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil || len(b) != 32 {
		return nil, problem.New(problem.Invalid, "join token is malformed")
	}
	return b, nil
}

func randomID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
