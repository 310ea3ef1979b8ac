// Package enroll admits a node's attestation key (AK). The server proves that
// the AK lives in the same TPM as the node's endorsement key (EK) by credential
// activation: it encrypts a secret to the EK, bound to the AK's name
// (TPM2_MakeCredential, done here in pure Go), and only that TPM can recover
// it (TPM2_ActivateCredential). A host is admitted by a one-time join token
// bound to its name, or left pending until an operator approves it; either way
// its name is bound to its EK, and an AK that did not pass is never used.
package enroll

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/google/go-tpm/tpm2"

	"trustpool/internal/evidence"
	"trustpool/internal/pki"
	"trustpool/internal/problem"
	"trustpool/internal/store"
	"trustpool/internal/verify"
)

// Limits on agent-supplied enrollment material.
const (
	maxPublic = 1 << 10
	maxCert   = 8 << 10
	maxCSR    = 4 << 10
	maxURL    = 512
	// TTL bounds how long a credential may wait for activation.
	TTL = 5 * time.Minute
)

// Request is an agent's enrollment request. Every field is untrusted.
type Request struct {
	Host      string `json:"host"`
	EKPublic  []byte `json:"ek_public"`         // TPMT_PUBLIC of the EK
	EKCert    []byte `json:"ek_cert,omitempty"` // DER, when the TPM has one
	AKPublic  []byte `json:"ak_public"`         // TPMT_PUBLIC of the AK
	URL       string `json:"url"`               // https URL the agent answers challenges on
	CSR       []byte `json:"csr"`               // DER CSR for the agent's TLS key
	JoinToken string `json:"join_token,omitempty"`
}

// Validate checks sizes and shapes; cryptographic checks come later.
func (r *Request) Validate() error {
	var errs []error
	if err := evidence.ValidateHostName(r.Host); err != nil {
		errs = append(errs, err)
	}
	for _, f := range []struct {
		name  string
		b     []byte
		min   int
		limit int
	}{{"ek_public", r.EKPublic, 1, maxPublic}, {"ak_public", r.AKPublic, 1, maxPublic}, {"ek_cert", r.EKCert, 0, maxCert}, {"csr", r.CSR, 1, maxCSR}} {
		if len(f.b) < f.min || len(f.b) > f.limit {
			errs = append(errs, fmt.Errorf("%s is %d bytes, want %d to %d", f.name, len(f.b), f.min, f.limit))
		}
	}
	if _, err := agentURL(r.URL); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func agentURL(s string) (*url.URL, error) {
	if len(s) > maxURL {
		return nil, fmt.Errorf("url is longer than %d bytes", maxURL)
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("url %q: want https://host:port", s)
	}
	return u, nil
}

// Credential is the server's answer to a Request: the activation challenge.
type Credential struct {
	ID              string `json:"id"`
	CredentialBlob  []byte `json:"credential_blob"`  // TPM2B_ID_OBJECT contents
	EncryptedSecret []byte `json:"encrypted_secret"` // TPM2B_ENCRYPTED_SECRET contents
}

// Activation is the agent's proof: the secret its TPM recovered.
type Activation struct {
	ID     string `json:"id"`
	Secret []byte `json:"secret"`
}

// Admitted is the outcome of a successful activation.
type Admitted struct {
	Host  string `json:"host"`
	State string `json:"state"` // store.HostActive, or store.HostPending awaiting an operator
	Cert  []byte `json:"cert"`  // PEM, the agent's TLS certificate
	CA    []byte `json:"ca"`    // PEM, the CA to trust for the server
}

// Store is what enrollment needs from storage.
type Store interface {
	GetHost(ctx context.Context, name string) (store.Host, error)
	HostByEK(ctx context.Context, ekHash []byte) (store.Host, error)
	PutHost(ctx context.Context, h store.Host) error
	CreateEnrollment(ctx context.Context, e store.Enrollment) error
	TakeEnrollment(ctx context.Context, id string) (store.Enrollment, error)
	ConsumeJoinToken(ctx context.Context, hash []byte, host string, now time.Time) error
}

// EKCertCheck verifies an EK certificate (DER) for the EK public area
// against the TPM vendors' CAs (package ekcert).
type EKCertCheck func(certDER, ekPublic []byte, now time.Time) error

// Service runs enrollments.
type Service struct {
	store   Store
	ca      *pki.CA
	now     func() time.Time
	ekCheck EKCertCheck
	needEK  bool
}

// New returns an enrollment service issuing agent certificates from ca.
func New(s Store, ca *pki.CA, now func() time.Time) *Service {
	return &Service{store: s, ca: ca, now: now}
}

// CheckEKCerts makes the service verify every EK certificate an agent
// presents with check, and, when require is set, refuse TPMs without one.
func (s *Service) CheckEKCerts(check EKCertCheck, require bool) *Service {
	s.ekCheck, s.needEK = check, require
	return s
}

// Begin checks a request and returns the credential the agent's TPM must
// activate.
func (s *Service) Begin(ctx context.Context, req *Request) (*Credential, error) {
	ak, kem, err := parseKeys(req)
	if err != nil {
		return nil, err
	}
	if err := s.checkEKCert(req); err != nil {
		return nil, err
	}
	if err := s.checkBinding(ctx, req.Host, req.EKPublic); err != nil {
		return nil, err
	}
	if req.JoinToken != "" { // fail early; the token is consumed only on activation
		if _, err := decodeToken(req.JoinToken); err != nil {
			return nil, err
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
		ID: id, Host: req.Host, EKPublic: req.EKPublic, EKCert: req.EKCert, AKPublic: req.AKPublic,
		AKName: ak.Name(), URL: req.URL, CSR: req.CSR, SecretHash: sum[:],
		ExpiresAt: s.now().Add(TTL), CreatedAt: s.now(),
	}
	if req.JoinToken != "" {
		e.TokenHash = TokenHash(req.JoinToken)
	}
	if err := s.store.CreateEnrollment(ctx, e); err != nil {
		return nil, fmt.Errorf("store enrollment of %s: %w", req.Host, err)
	}
	return &Credential{ID: id, CredentialBlob: blob, EncryptedSecret: enc}, nil
}

// parseKeys checks a request's shape and decodes its keys: the AK must be a
// restricted signing key, the EK a restricted decryption key fixed to its
// TPM that a credential can be encrypted to.
func parseKeys(req *Request) (*verify.AK, tpm2.LabeledEncapsulationKey, error) {
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

// checkEKCert applies the EK certificate policy: a presented certificate
// must chain to a TPM vendor's CA and certify this EK.
func (s *Service) checkEKCert(req *Request) error {
	switch {
	case len(req.EKCert) == 0 && s.needEK:
		return problem.New(problem.Forbidden, "an EK certificate from a TPM vendor is required and the agent sent none")
	case len(req.EKCert) == 0 || s.ekCheck == nil:
		return nil
	}
	if err := s.ekCheck(req.EKCert, req.EKPublic, s.now()); err != nil {
		return problem.Wrap(problem.Forbidden, err, "EK certificate refused: %v", err)
	}
	return nil
}

// checkBinding refuses an EK bound to another host, and a host name bound to
// another EK: a node cannot take over another node's identity by enrolling.
func (s *Service) checkBinding(ctx context.Context, host string, ekPublic []byte) error {
	switch h, err := s.store.HostByEK(ctx, store.EKHash(ekPublic)); {
	case err == nil && h.Name != host:
		return problem.New(problem.Conflict, "this endorsement key is bound to another host")
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("look up EK: %w", err)
	}
	switch h, err := s.store.GetHost(ctx, host); {
	case err == nil && subtle.ConstantTimeCompare(h.EKPublic, ekPublic) != 1:
		return problem.New(problem.Conflict, "host %s is bound to another endorsement key", host)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("look up host %s: %w", host, err)
	}
	return nil
}

// Activate checks the secret the agent's TPM recovered. On success the AK is
// the host's, the host is admitted (join token) or pending (no token), and
// the agent gets its TLS certificate. Each enrollment can be tried once.
func (s *Service) Activate(ctx context.Context, act *Activation) (*Admitted, error) {
	e, err := s.store.TakeEnrollment(ctx, act.ID)
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
	// Re-check: another enrollment may have bound the name or EK meanwhile.
	if err := s.checkBinding(ctx, e.Host, e.EKPublic); err != nil {
		return nil, err
	}
	state := store.HostPending
	if e.TokenHash != nil {
		if err := s.store.ConsumeJoinToken(ctx, e.TokenHash, e.Host, s.now()); err != nil {
			return nil, tokenProblem(err)
		}
		state = store.HostActive
	}
	if old, err := s.store.GetHost(ctx, e.Host); err == nil && old.State == store.HostActive {
		state = store.HostActive // a re-enrollment of an admitted host with the same EK
	}
	u, _ := agentURL(e.URL)
	urlHost := u.Hostname()
	if net.ParseIP(urlHost) == nil && urlHost != e.Host {
		urlHost = "" // only IPs or the host's own name go into its certificate
	}
	cert, err := s.ca.SignAgentCSR(e.CSR, e.Host, urlHost)
	if err != nil {
		return nil, problem.Wrap(problem.Invalid, err, "agent certificate request: %v", err)
	}
	h := store.Host{
		Name: e.Host, State: state, EKPublic: e.EKPublic, EKCert: e.EKCert, AKPublic: e.AKPublic,
		AKName: e.AKName, URL: e.URL, AgentCert: cert,
	}
	if old, err := s.store.GetHost(ctx, e.Host); err == nil {
		h.Labels, h.Policy, h.CreatedAt = old.Labels, old.Policy, old.CreatedAt
	}
	if err := s.store.PutHost(ctx, h); err != nil {
		return nil, fmt.Errorf("store host %s: %w", e.Host, err)
	}
	return &Admitted{Host: e.Host, State: string(state), Cert: cert, CA: s.ca.CertPEM}, nil
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
