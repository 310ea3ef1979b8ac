package integrity

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/httpjson"
	"trustpool/internal/store"
)

// QuotePath is where an agent answers challenges.
const QuotePath = "/v1/quote"

// ErrAgent marks an agent that answered, but with an error.
var ErrAgent = errors.New("agent error")

// HostVerifier checks that a TLS peer's certificate chain is the one pinned
// for host at its admission (pki.CA.VerifyAgent).
type HostVerifier func(chain []*x509.Certificate, host string, pinned []byte, usage x509.ExtKeyUsage) error

// HTTPAgents challenges agents over mutually authenticated TLS: the server
// presents its certificate as a client, and accepts only the agent
// certificate admitted for the host it means to reach, whatever the
// address.
type HTTPAgents struct {
	cert   tls.Certificate
	verify HostVerifier
	base   *http.Transport
	// clients holds one client per host name (string → *agentClient): the
	// TLS identity check is per host and pinned certificate, and
	// connections are reused until the pin changes.
	clients sync.Map
	// Observe, when set before the first challenge, is told of every
	// round trip and its result: ok, agent_error or unreachable.
	Observe func(d time.Duration, result string)
}

type agentClient struct {
	pinned []byte
	*httpjson.Client
}

// NewHTTPAgents returns a challenger presenting cert and checking agents with verify.
func NewHTTPAgents(cert tls.Certificate, verify HostVerifier) *HTTPAgents {
	return &HTTPAgents{cert: cert, verify: verify, base: &http.Transport{
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ForceAttemptHTTP2:     false,
	}}
}

// Challenge sends c to h's agent and returns its evidence, decoded strictly
// (at most evidence.MaxBody bytes) and validated. An agent that answered
// with an error or with bad evidence is ErrAgent; one that could not be
// reached is not.
func (a *HTTPAgents) Challenge(ctx context.Context, h store.Host, c *evidence.Challenge) (*evidence.Evidence, error) {
	start := time.Now()
	received, err := a.client(h).Raw(ctx, http.MethodPost, strings.TrimSuffix(h.URL, "/")+QuotePath, c)
	var ev *evidence.Evidence
	if err == nil {
		if ev, err = DecodeEvidence(received); err != nil {
			err = fmt.Errorf("%w: %v", httpjson.ErrAnswer, err)
		}
	}
	if a.Observe != nil {
		result := "ok"
		if errors.Is(err, httpjson.ErrAnswer) {
			result = "agent_error"
		} else if err != nil {
			result = "unreachable"
		}
		a.Observe(time.Since(start), result)
	}
	switch {
	case errors.Is(err, httpjson.ErrAnswer):
		return nil, fmt.Errorf("challenge %s: %w: %w", h.Name, ErrAgent, err)
	case err != nil:
		return nil, fmt.Errorf("challenge %s: %w", h.Name, err)
	}
	return ev, nil
}

// DecodeEvidence parses an agent's evidence document strictly and
// validates it; the evidence keeps the document (evidence.Received).
func DecodeEvidence(b []byte) (*evidence.Evidence, error) {
	ev, err := evidence.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("decode evidence: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("invalid evidence: %w", err)
	}
	return ev, nil
}

func (a *HTTPAgents) client(h store.Host) *agentClient {
	if c, ok := a.clients.Load(h.Name); ok && bytes.Equal(c.(*agentClient).pinned, h.AgentCert) {
		return c.(*agentClient)
	}
	host, pinned := h.Name, h.AgentCert
	t := a.base.Clone()
	t.TLSClientConfig = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{a.cert},
		// The chain is checked below against the host's pinned certificate,
		// not the dialled address; the standard check would use the latter.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return a.verify(cs.PeerCertificates, host, pinned, x509.ExtKeyUsageServerAuth)
		},
	}
	c := &agentClient{pinned: pinned, Client: &httpjson.Client{HTTP: &http.Client{Transport: t}, MaxAnswer: evidence.MaxBody}}
	if old, ok := a.clients.Swap(h.Name, c); ok {
		old.(*agentClient).HTTP.CloseIdleConnections() // a revoked certificate's connections
	}
	return c
}

// Forget drops host's client and its connections (the host was deleted).
func (a *HTTPAgents) Forget(host string) {
	if old, ok := a.clients.LoadAndDelete(host); ok {
		old.(*agentClient).HTTP.CloseIdleConnections()
	}
}
