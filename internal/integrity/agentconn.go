package integrity

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/httpjson"
	"trustpool/internal/store"
)

// take returns ac's kept connection, if it has one still young enough.
func (a *HTTPAgents) take(ac *agentClient) *agentConn {
	ac.mu.Lock()
	conn := ac.idle
	ac.idle = nil
	ac.mu.Unlock()
	if conn == nil {
		return nil
	}
	a.idle.Add(-1)
	if time.Since(conn.since) > MaxConnIdle {
		conn.Close()
		return nil
	}
	return conn
}

// keep keeps conn as ac's connection for the next challenge, or closes it
// when ac has one already or maxIdle are kept.
func (a *HTTPAgents) keep(ac *agentClient, conn *agentConn) {
	if a.idle.Add(1) > a.maxIdle {
		a.idle.Add(-1)
		conn.Close()
		return
	}
	conn.since = time.Now()
	ac.mu.Lock()
	if ac.idle == nil && !ac.closed {
		ac.idle, conn = conn, nil
	}
	ac.mu.Unlock()
	if conn != nil {
		a.idle.Add(-1)
		conn.Close()
	}
}

// client returns h's client, made anew when h's pinned certificate or URL
// changed (a re-admission: the old client's connection is closed).
func (a *HTTPAgents) client(h store.Host) (*agentClient, error) {
	if c, ok := a.clients.Load(h.Name); ok {
		if c := c.(*agentClient); c.url == h.URL && c.pinSum == sha256.Sum256(h.AgentCert) {
			return c, nil
		}
	}
	c, err := a.newClient(h)
	if err != nil {
		return nil, err
	}
	if old, ok := a.clients.Swap(h.Name, c); ok {
		a.closeIdle(old.(*agentClient))
	}
	return c, nil
}

func (a *HTTPAgents) newClient(h store.Host) (*agentClient, error) {
	u, err := url.Parse(h.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("agent URL %q: want https://host:port", h.URL)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	pinned := pinnedDER(h.AgentCert)
	if pinned == nil {
		return nil, fmt.Errorf("the agent certificate pinned for %s is not a PEM certificate", h.Name)
	}
	ac := &agentClient{
		name: h.Name, pinned: pinned, pinSum: sha256.Sum256(h.AgentCert), url: h.URL,
		addr: net.JoinHostPort(u.Hostname(), port), host: u.Host, path: QuotePath,
	}
	if p := strings.TrimSuffix(u.EscapedPath(), "/"); p != "" {
		ac.path = p + QuotePath
	}
	return ac, nil
}

// verifyConnection accepts only ac's pinned certificate: its full check,
// or the bytes alone while an earlier full check stands (checkedBefore).
func (a *HTTPAgents) verifyConnection(ac *agentClient, cs tls.ConnectionState) error {
	if ac.checkedBefore(cs.PeerCertificates) {
		return nil
	}
	pinned := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ac.pinned})
	if err := a.verify(cs.PeerCertificates, ac.name, pinned, x509.ExtKeyUsageServerAuth); err != nil {
		return err
	}
	ac.checked.Store(min(cs.PeerCertificates[0].NotAfter.UnixNano(), time.Now().Add(recheck).UnixNano()))
	return nil
}

// sessionCache keeps one host's TLS session, serialized: a parsed session
// holds the agent's certificate as x509 structures (several kilobytes a
// host), its bytes about a kilobyte and a half; they are parsed again
// only when a dial resumes.
type sessionCache struct {
	mu            sync.Mutex
	ticket, state []byte
}

// has reports whether a session is kept.
func (c *sessionCache) has() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ticket != nil
}

func (c *sessionCache) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	ticket, state := c.ticket, c.state
	c.mu.Unlock()
	if ticket == nil {
		return nil, false
	}
	ss, err := tls.ParseSessionState(state)
	if err != nil {
		return nil, false
	}
	cs, err := tls.NewResumptionState(ticket, ss)
	return cs, err == nil
}

func (c *sessionCache) Put(_ string, cs *tls.ClientSessionState) {
	var ticket, state []byte
	if cs != nil { // nil: forget the session
		t, ss, err := cs.ResumptionState()
		if err != nil || ss == nil {
			return
		}
		if state, err = ss.Bytes(); err != nil {
			return
		}
		state = bytes.Clone(state) // without the encoder's spare capacity
		ticket = t
	}
	c.mu.Lock()
	c.ticket, c.state = ticket, state
	c.mu.Unlock()
}

// recheck is how long a pinned certificate's full check stands for later
// connections presenting the same bytes (within its validity).
const recheck = 10 * time.Minute

// checkedBefore reports whether chain's leaf is, byte for byte, the pinned
// certificate that passed the full check less than recheck ago: the
// check's other parts (names, issuer, signature) depend on those bytes
// alone, and its time on the clock, which bounds the answer.
func (ac *agentClient) checkedBefore(chain []*x509.Certificate) bool {
	if len(chain) == 0 || time.Now().UnixNano() >= ac.checked.Load() {
		return false
	}
	leaf := chain[0]
	return bytes.Equal(leaf.Raw, ac.pinned) && !time.Now().Before(leaf.NotBefore)
}

// pinnedDER is the DER of a pinned certificate as the store keeps it (PEM),
// nil when it is not one: a client keeps the DER, half the size.
func pinnedDER(certPEM []byte) []byte {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil
	}
	return block.Bytes
}

// closeIdle closes ac's kept connection, and keeps none after.
func (a *HTTPAgents) closeIdle(ac *agentClient) {
	ac.mu.Lock()
	conn := ac.idle
	ac.idle, ac.closed = nil, true
	ac.mu.Unlock()
	if conn != nil {
		a.idle.Add(-1)
		conn.Close()
	}
}

// agentClient reaches one host's agent, as admitted with pinned and url.
// It holds no TLS configuration: each dial clones the server's, so that a
// host costs its names, its pin and its session.
type agentClient struct {
	name   string
	pinned []byte // the admitted certificate, DER
	// pinSum is the SHA-256 of the pin's PEM as the store keeps it: a
	// challenge tells a re-admission by it without decoding the PEM.
	pinSum   [32]byte
	url      string
	addr     string // host:port to dial
	host     string // the Host header
	path     string
	sessions sessionCache
	// checked is until when (unix nanoseconds) the pinned certificate's
	// full check stands (checkedBefore): a new connection, resumed or not,
	// then only compares the bytes.
	checked atomic.Int64

	mu     sync.Mutex // guards idle and closed
	idle   *agentConn
	closed bool // replaced or forgotten: keeps no connection
}

// request is the challenge's HTTP/1.1 request with body.
func (ac *agentClient) request(body []byte) []byte {
	b := make([]byte, 0, len(ac.path)+len(ac.host)+len(body)+128)
	b = append(b, "POST "...)
	b = append(b, ac.path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, ac.host...)
	b = append(b, "\r\nUser-Agent: trustpool\r\nContent-Type: application/json\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...)
}

// resumeCurves are the key exchanges a resumption offers. A resumed
// handshake's keys mix the session's secret with a fresh exchange; the
// secret comes from a full handshake made with the hybrid X25519MLKEM768
// (Go's default), so the session stays post-quantum with P-256 alone,
// which costs a third of the hybrid exchange. Every dial that does not
// resume is made with the default exchanges.
var resumeCurves = []tls.CurveID{tls.CurveP256}

func (a *HTTPAgents) dial(ctx context.Context, ac *agentClient) (*agentConn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	resuming := ac.sessions.has()
	cfg := a.tls.Clone()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { return a.verifyConnection(ac, cs) }
	cfg.ClientSessionCache = &ac.sessions
	if resuming {
		cfg.CurvePreferences = resumeCurves
	}
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", ac.addr)
	if err != nil {
		return nil, err
	}
	conn := c.(*tls.Conn)
	if cs := conn.ConnectionState(); resuming && !cs.DidResume && cs.Version == tls.VersionTLS13 {
		// The agent refused the session (a restart: its ticket keys are
		// new): this full handshake was made with P-256 alone, and its
		// sessions would be classical. It carries nothing; the dial is
		// made again with the default exchanges.
		conn.Close()
		ac.sessions.Put("", nil)
		return a.dial(ctx, ac)
	}
	return &agentConn{Conn: conn}, nil
}

// agentConn is a connection to an agent, between challenges or in one.
type agentConn struct {
	*tls.Conn
	since time.Time // kept since
}

// readers are the buffered readers of exchanges in progress.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8<<10) }}

// exchange writes req and reads the answer's body (at most
// evidence.MaxBody bytes), within ctx. answered says the agent sent
// something back, reusable that the connection may carry the next
// challenge.
func (c *agentConn) exchange(ctx context.Context, req []byte) (body []byte, answered, reusable bool, err error) {
	deadline, _ := ctx.Deadline()
	if err := c.SetDeadline(deadline); err != nil {
		return nil, false, false, err
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if _, err := c.Write(req); err != nil {
		return nil, false, false, err
	}
	// The answer's header and body together are bounded: a hostile agent
	// cannot send headers without end.
	r := readers.Get().(*bufio.Reader)
	r.Reset(&io.LimitedReader{R: c.Conn, N: maxAnswerHeader + evidence.MaxBody})
	defer func() {
		r.Reset(nil)
		readers.Put(r)
	}()
	if _, err := r.Peek(1); err != nil {
		return nil, false, false, err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return nil, true, false, err
	}
	defer resp.Body.Close()
	if body, err = httpjson.ReadAnswer(resp, evidence.MaxBody); err != nil {
		return nil, true, false, err
	}
	// Not kept: an agent that closes, or that sent more than one answer.
	return body, true, !resp.Close && r.Buffered() == 0, nil
}
