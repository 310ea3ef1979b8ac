package evidence

import (
	"errors"
	"fmt"
	"net/url"
)

// The enrollment exchange, as the agent and the server's /v1/enroll routes
// speak it: EnrollRequest → EnrollCredential (the activation challenge) →
// EnrollActivation → Admitted, then EnrollPoll while an operator has not yet
// approved. The server side (credential activation, admission) is package
// enroll; the wire types live here so that the agent needs nothing of the
// server's.

// Limits on agent-supplied enrollment material. An EK certificate is about
// 1 KiB; with these, a request row stays under 8 KiB.
const (
	maxPublic = 1 << 10
	maxCert   = 3 << 10
	maxCSR    = 2 << 10
	maxURL    = 512
)

// Agent modes, as EnrollRequest.Mode names them.
const (
	ModePull = "pull" // the server dials the agent at its URL
	ModePush = "push" // the agent dials the server: fetches a challenge, posts evidence
)

// EnrollRequest is an agent's enrollment request. Every field is untrusted.
type EnrollRequest struct {
	Host      string `json:"host"`
	EKPublic  []byte `json:"ek_public"`         // TPMT_PUBLIC of the EK
	EKCert    []byte `json:"ek_cert,omitempty"` // DER, when the TPM has one
	AKPublic  []byte `json:"ak_public"`         // TPMT_PUBLIC of the AK
	URL       string `json:"url,omitempty"`     // https URL the agent answers challenges on (pull mode)
	Mode      string `json:"mode,omitempty"`    // "pull" (default) or "push": the agent dials the server and has no URL
	CSR       []byte `json:"csr"`               // DER CSR for the agent's TLS key
	JoinToken string `json:"join_token,omitempty"`
}

// Validate checks sizes and shapes; cryptographic checks come later. The
// host name must be canonical (see CanonicalHostName).
func (r *EnrollRequest) Validate() error {
	var errs []error
	if err := ValidateHostName(r.Host); err != nil {
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
	switch r.Mode {
	case "", ModePull:
		if err := validateAgentURL(r.URL); err != nil {
			errs = append(errs, err)
		}
	case ModePush:
		if r.URL != "" {
			errs = append(errs, errors.New("a push agent opens no port: url must be empty"))
		}
	default:
		errs = append(errs, fmt.Errorf("mode %q: want pull or push", r.Mode))
	}
	return errors.Join(errs...)
}

// validateAgentURL accepts only https://host:port style URLs: no user
// information, query or fragment.
func validateAgentURL(s string) error {
	if len(s) > maxURL {
		return fmt.Errorf("url is longer than %d bytes", maxURL)
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("url %q: want https://host:port", s)
	}
	return nil
}

// EnrollCredential is the server's answer to an EnrollRequest: the
// activation challenge.
type EnrollCredential struct {
	ID              string `json:"id"`
	CredentialBlob  []byte `json:"credential_blob"`  // TPM2B_ID_OBJECT contents
	EncryptedSecret []byte `json:"encrypted_secret"` // TPM2B_ENCRYPTED_SECRET contents
}

// EnrollActivation is the agent's proof: the secret its TPM recovered.
type EnrollActivation struct {
	ID     string `json:"id"`
	Secret []byte `json:"secret"`
}

// States of an enrollment, as Admitted reports them.
const (
	EnrollAdmitted = "active"
	EnrollPending  = "pending"
)

// Admitted is the outcome of a successful activation, and of a poll.
type Admitted struct {
	Host  string `json:"host"`
	State string `json:"state"`          // EnrollAdmitted, or EnrollPending awaiting an operator
	Cert  []byte `json:"cert,omitempty"` // PEM, the agent's TLS certificate, once admitted
	CA    []byte `json:"ca,omitempty"`   // PEM, the CA to trust for the server
	// Poll is the secret a pending agent polls with (EnrollPoll); only its
	// hash is stored.
	Poll string `json:"poll,omitempty"`
}

// EnrollPoll is a pending agent asking whether it was approved.
type EnrollPoll struct {
	Poll string `json:"poll"`
}
