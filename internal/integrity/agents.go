package integrity

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"trustpool/internal/evidence"
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
}

type agentClient struct {
	pinned []byte
	*http.Client
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

// Challenge sends c to h's agent and returns its evidence, decoded strictly.
func (a *HTTPAgents) Challenge(ctx context.Context, h store.Host, c *evidence.Challenge) (*evidence.Evidence, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(h.URL, "/")+QuotePath, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("challenge %s: %w", h.Name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client(h).Do(req)
	if err != nil {
		return nil, fmt.Errorf("challenge %s: %w", h.Name, err)
	}
	defer resp.Body.Close()
	lr := io.LimitReader(resp.Body, evidence.MaxBody+1)
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(lr, 512))
		return nil, fmt.Errorf("challenge %s: %w: %s: %s", h.Name, ErrAgent, resp.Status, bytes.TrimSpace(msg))
	}
	b, err := io.ReadAll(lr)
	if err != nil {
		return nil, fmt.Errorf("challenge %s: read evidence: %w", h.Name, err)
	}
	if len(b) > evidence.MaxBody {
		return nil, fmt.Errorf("challenge %s: %w: evidence exceeds %d bytes", h.Name, ErrAgent, evidence.MaxBody)
	}
	ev, err := DecodeEvidence(b)
	if err != nil {
		return nil, fmt.Errorf("challenge %s: %w: %v", h.Name, ErrAgent, err)
	}
	return ev, nil
}

// DecodeEvidence parses an agent's evidence document strictly and validates it.
func DecodeEvidence(b []byte) (*evidence.Evidence, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var ev evidence.Evidence
	if err := dec.Decode(&ev); err != nil {
		return nil, fmt.Errorf("decode evidence: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode evidence: trailing data")
	}
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("invalid evidence: %w", err)
	}
	return &ev, nil
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
	c := &agentClient{pinned: pinned, Client: &http.Client{Transport: t}}
	if old, ok := a.clients.Swap(h.Name, c); ok {
		old.(*agentClient).CloseIdleConnections() // a revoked certificate's connections
	}
	return c
}

// Forget drops host's client and its connections (the host was deleted).
func (a *HTTPAgents) Forget(host string) {
	if old, ok := a.clients.LoadAndDelete(host); ok {
		old.(*agentClient).CloseIdleConnections()
	}
}
