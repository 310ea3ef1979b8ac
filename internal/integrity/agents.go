package integrity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
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
//
// It speaks HTTP/1.1 on connections of its own rather than through an
// http.Transport, one challenge at a time on a connection: a connection
// kept between challenges then costs its TLS state and no goroutine (a
// Transport runs two per connection), and the challenge is written and
// read by its caller alone. At most maxIdle connections are kept across
// all hosts, so that a fleet larger than the open-file limit still fits;
// a host whose connection was not kept dials anew and resumes its TLS
// session, which spares the handshake's signatures. Every connection,
// resumed or not, must present the pinned certificate, byte for byte; its
// full check (checkedBefore) is repeated every ten minutes.
type HTTPAgents struct {
	tls     *tls.Config // cloned for each dial, with the host's check and session
	verify  HostVerifier
	maxIdle int64 // connections kept open between challenges, across hosts
	idle    atomic.Int64
	// clients holds one client per host name (string → *agentClient): the
	// TLS identity check is per host and pinned certificate, and
	// connections are reused until the pin or the URL changes.
	clients sync.Map
	// Observe, when set before the first challenge, is told of every
	// round trip and its result: ok, agent_error or unreachable.
	Observe func(d time.Duration, result string)
}

// Timeouts of a challenge's connection, besides the caller's context.
const (
	dialTimeout = 10 * time.Second // TCP connect and TLS handshake
	// MaxConnIdle is how long a kept connection is reused: agents close
	// theirs after two idle minutes.
	MaxConnIdle = 90 * time.Second
	// maxAnswerHeader bounds an agent's answer's status line and header.
	maxAnswerHeader = 64 << 10
)

// NewHTTPAgents returns a challenger presenting cert and checking agents
// with verify, keeping at most maxIdle connections open.
func NewHTTPAgents(cert tls.Certificate, verify HostVerifier, maxIdle int64) *HTTPAgents {
	return &HTTPAgents{verify: verify, maxIdle: maxIdle, tls: &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// The chain is checked against the host's pinned certificate
		// (verifyConnection), not the dialled address; the standard check
		// would use the latter.
		InsecureSkipVerify: true,
	}}
}

// Challenge sends c to h's agent and returns its evidence, decoded strictly
// (at most evidence.MaxBody bytes) and validated. An agent that answered
// with an error or with bad evidence is ErrAgent; one that could not be
// reached is not.
func (a *HTTPAgents) Challenge(ctx context.Context, h store.Host, c *evidence.Challenge) (*evidence.Evidence, error) {
	start := time.Now()
	received, err := a.roundTrip(ctx, h, c)
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

// roundTrip posts c to h's agent and returns its 2xx answer's body.
func (a *HTTPAgents) roundTrip(ctx context.Context, h store.Host, c *evidence.Challenge) ([]byte, error) {
	ac, err := a.client(h)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	req := ac.request(body)
	conn := a.take(ac)
	reused := conn != nil
	for {
		if conn == nil {
			if conn, err = a.dial(ctx, ac); err != nil {
				return nil, fmt.Errorf("POST %s: %w", ac.url, timedOut(ctx, err))
			}
		}
		b, answered, reusable, err := conn.exchange(ctx, req)
		if err != nil && reused && !answered && ctx.Err() == nil {
			// A kept connection the agent had closed meanwhile: the
			// challenge once more, on a new one (answering it twice is
			// harmless: the nonce verifies once).
			conn.Close()
			conn, reused = nil, false
			continue
		}
		if err != nil || !reusable {
			conn.Close()
		} else {
			a.keep(ac, conn)
		}
		if err != nil {
			return nil, fmt.Errorf("POST %s: %w", ac.url, timedOut(ctx, err))
		}
		return b, nil
	}
}

// timedOut names the challenge's deadline (or cancellation) as the cause
// of err when it is: the connection's own error says only "i/o timeout".
func timedOut(ctx context.Context, err error) error {
	cerr := ctx.Err()
	var ne net.Error
	if d, ok := ctx.Deadline(); cerr == nil && ok && !time.Now().Before(d) && errors.As(err, &ne) && ne.Timeout() {
		cerr = context.DeadlineExceeded // the connection's deadline, the context's, fired first
	}
	if cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w: %v", cerr, err)
	}
	return err
}

// Forget drops host's client and its connection (the host was deleted).
func (a *HTTPAgents) Forget(host string) {
	if old, ok := a.clients.LoadAndDelete(host); ok {
		a.closeIdle(old.(*agentClient))
	}
}

// DecodeEvidence parses an agent's evidence document strictly and
// validates it; the evidence keeps b as its document (evidence.Received).
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
