package integrity

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/pki"
	"trustpool/internal/store"
	"trustpool/internal/verify/verifytest"
)

// agentPKI is a CA, the server's certificate and a way to issue agents'.
type agentPKI struct {
	ca     *pki.CA
	server tls.Certificate
}

func newAgentPKI(t testing.TB) *agentPKI {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.LoadOrCreateCA(dir, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.LoadOrCreateServerCert(dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return &agentPKI{ca: ca, server: srv}
}

// agentCert issues host's agent certificate: the pair and its PEM, as
// pinned at admission.
func (p *agentPKI) agentCert(t testing.TB, host string) (tls.Certificate, []byte) {
	t.Helper()
	key, csr, err := pki.NewKeyAndCSR(host)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := p.ca.SignAgentCSR(csr, host)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair, certPEM
}

// testAgent is an agent's listener on loopback answering challenges with
// a node's evidence; it counts connections and TLS resumptions, and can
// keep the key exchange of every handshake.
type testAgent struct {
	*httptest.Server
	conns, resumed atomic.Int64
	tls            atomic.Pointer[tls.Config]

	// record turns on keeping handshakes (off, they would grow the heap
	// BenchmarkAgentConnMemory measures).
	record     atomic.Bool
	mu         sync.Mutex
	handshakes []handshake
}

// handshake is what a test agent saw of one.
type handshake struct {
	resumed bool
	curve   tls.CurveID
}

func (a *testAgent) seen() []handshake {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.handshakes)
}

// setCert makes the agent present cert from the next handshake on, with
// session ticket keys of its own (as another process at the address has).
func (a *testAgent) setCert(p *agentPKI, cert tls.Certificate) {
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.ca.Pool(),
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.DidResume {
				a.resumed.Add(1)
			}
			if a.record.Load() {
				a.mu.Lock()
				a.handshakes = append(a.handshakes, handshake{cs.DidResume, cs.CurveID})
				a.mu.Unlock()
			}
			return nil
		},
	}
	var key [32]byte
	rand.Read(key[:])
	cfg.SetSessionTicketKeys([][32]byte{key})
	a.tls.Store(cfg)
}

func (p *agentPKI) startAgent(t testing.TB, cert tls.Certificate, node *verifytest.Node) *testAgent {
	t.Helper()
	a := &testAgent{}
	a.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c evidence.Challenge
		if r.URL.Path != QuotePath || json.NewDecoder(r.Body).Decode(&c) != nil {
			http.Error(w, "bad challenge", http.StatusBadRequest)
			return
		}
		ev, err := node.EvidenceFor(c.Nonce, c.Selection)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(ev)
	}))
	a.setCert(p, cert)
	a.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return a.tls.Load(), nil }}
	a.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			a.conns.Add(1)
		}
	}
	a.StartTLS()
	t.Cleanup(a.Close)
	return a
}

// challengeOnce challenges h through ag and checks the evidence answers.
func challengeOnce(t testing.TB, ag *HTTPAgents, h store.Host) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c := &evidence.Challenge{Nonce: []byte(strings.Repeat("n", 32)), Selection: verifytest.DefaultSelection()}
	_, err := ag.Challenge(ctx, h, c)
	return err
}

func newAgentSetup(t testing.TB, maxIdle int64) (*HTTPAgents, store.Host, *testAgent, *agentPKI) {
	t.Helper()
	p := newAgentPKI(t)
	node, err := verifytest.NewNode(verifytest.P256, "node-1.test")
	if err != nil {
		t.Fatal(err)
	}
	cert, pinned := p.agentCert(t, "node-1.test")
	a := p.startAgent(t, cert, node)
	ag := NewHTTPAgents(p.server, p.ca.VerifyAgent, maxIdle)
	return ag, store.Host{Name: "node-1.test", URL: a.URL, AgentCert: pinned}, a, p
}

func TestAgentConnectionKept(t *testing.T) {
	ag, h, a, _ := newAgentSetup(t, 10)
	for range 3 {
		if err := challengeOnce(t, ag, h); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.conns.Load(); n != 1 {
		t.Fatalf("3 challenges took %d connections, want 1 kept between them", n)
	}
	if n := ag.idle.Load(); n != 1 {
		t.Fatalf("%d connections counted as kept, want 1", n)
	}
	ag.Forget(h.Name)
	if n := ag.idle.Load(); n != 0 {
		t.Fatalf("%d connections counted as kept after Forget, want 0", n)
	}
}

// An agent that closed the kept connection (a restart, its idle timeout)
// is challenged again on a new one, not reported unreachable.
func TestAgentClosedKeptConnection(t *testing.T) {
	ag, h, a, _ := newAgentSetup(t, 10)
	if err := challengeOnce(t, ag, h); err != nil {
		t.Fatal(err)
	}
	a.CloseClientConnections()
	if err := challengeOnce(t, ag, h); err != nil {
		t.Fatalf("challenge after the agent closed the kept connection: %v", err)
	}
	if n := a.conns.Load(); n != 2 {
		t.Fatalf("connections = %d, want 2", n)
	}
}

// Beyond maxIdle every challenge dials, and resumes the TLS session; the
// pinned certificate's full check is made once, not at every connection.
func TestAgentConnectionsBeyondMaxIdle(t *testing.T) {
	ag, h, a, _ := newAgentSetup(t, 0)
	var checked atomic.Int64
	verify := ag.verify
	ag.verify = func(chain []*x509.Certificate, host string, pinned []byte, usage x509.ExtKeyUsage) error {
		checked.Add(1)
		return verify(chain, host, pinned, usage)
	}
	for range 3 {
		if err := challengeOnce(t, ag, h); err != nil {
			t.Fatal(err)
		}
	}
	if n := a.conns.Load(); n != 3 {
		t.Fatalf("connections = %d, want 3 (none kept)", n)
	}
	if n := a.resumed.Load(); n < 1 {
		t.Fatalf("resumed handshakes = %d, want the later dials to resume", n)
	}
	if n := checked.Load(); n != 1 {
		t.Fatalf("pinned certificate fully checked %d times, want once for 3 connections", n)
	}
}

// A full handshake uses the hybrid post-quantum exchange and a resumption
// P-256 alone (its keys also mix the hybrid handshake's secret). A
// resumption the agent refuses (new ticket keys: a restart) is not
// continued as a classical full handshake: the dial is made again, hybrid.
func TestAgentResumesWithP256AfterHybrid(t *testing.T) {
	ag, h, a, p := newAgentSetup(t, 0)
	a.record.Store(true)
	for range 2 {
		if err := challengeOnce(t, ag, h); err != nil {
			t.Fatal(err)
		}
	}
	a.setCert(p, a.tls.Load().Certificates[0]) // a restart: new ticket keys
	for range 2 {
		if err := challengeOnce(t, ag, h); err != nil {
			t.Fatal(err)
		}
	}
	hybrid, p256 := tls.X25519MLKEM768, tls.CurveP256
	// The refused resumption shows as a full P-256 handshake the client
	// closed at once, before the hybrid one that carried the challenge.
	want := []handshake{{false, hybrid}, {true, p256}, {false, p256}, {false, hybrid}, {true, p256}}
	if got := a.seen(); !slices.Equal(got, want) {
		t.Fatalf("handshakes (resumed, exchange) = %v, want %v", got, want)
	}
}

// Once the pinned certificate passed its check, an impostor at the address
// presenting another certificate of the same CA and name is still refused:
// the bytes are compared at every connection.
func TestAgentImpostorAfterCheck(t *testing.T) {
	ag, h, a, p := newAgentSetup(t, 0)
	if err := challengeOnce(t, ag, h); err != nil {
		t.Fatal(err)
	}
	other, _ := p.agentCert(t, h.Name)
	a.setCert(p, other)
	err := challengeOnce(t, ag, h)
	if err == nil || !strings.Contains(err.Error(), "not the one admitted") {
		t.Fatalf("challenge of an impostor with another certificate of the CA = %v, want refused", err)
	}
}

// A host re-admitted with a new certificate: an agent still presenting
// the old one is refused, resumption or not.
func TestAgentNewPinRefusesOldCertificate(t *testing.T) {
	ag, h, _, _ := newAgentSetup(t, 0)
	if err := challengeOnce(t, ag, h); err != nil {
		t.Fatal(err)
	}
	p := newAgentPKI(t)
	_, other := p.agentCert(t, h.Name)
	h.AgentCert = other
	err := challengeOnce(t, ag, h)
	if err == nil || !strings.Contains(err.Error(), "not the one admitted") {
		t.Fatalf("challenge of an agent not presenting the pinned certificate = %v, want refused", err)
	}
}

// A hostile agent that sends headers without end is cut off after a
// bounded read.
func TestAgentEndlessHeaderBounded(t *testing.T) {
	p := newAgentPKI(t)
	cert, pinned := p.agentCert(t, "node-1.test")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var sent atomic.Int64
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.ReadAll(io.LimitReader(c, 1)) // the handshake, and the request begins
		line := []byte("X-Filler: " + strings.Repeat("a", 1000) + "\r\n")
		c.Write([]byte("HTTP/1.1 200 OK\r\n"))
		for {
			n, err := c.Write(line)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	ag := NewHTTPAgents(p.server, p.ca.VerifyAgent, 10)
	h := store.Host{Name: "node-1.test", URL: "https://" + ln.Addr().String(), AgentCert: pinned}
	if err := challengeOnce(t, ag, h); err == nil {
		t.Fatal("an endless header was accepted")
	}
	// What the agent got written: the bound, and what the socket buffers held.
	if n := sent.Load(); n > maxAnswerHeader+evidence.MaxBody+32<<20 {
		t.Fatalf("the agent wrote %d bytes before it was cut off", n)
	}
}

// An agent's error answer is an agent error, with its message.
func TestAgentErrorAnswer(t *testing.T) {
	ag, h, _, _ := newAgentSetup(t, 10)
	h.URL += "/elsewhere" // the agent answers 400 for another path
	err := challengeOnce(t, ag, h)
	if !errors.Is(err, ErrAgent) || !strings.Contains(err.Error(), "bad challenge") {
		t.Fatalf("error answer = %v, want ErrAgent with the agent's message", err)
	}
}

// BenchmarkAgentConnMemory reports the server's heap for each agent it
// keeps a connection to (kept) or only a TLS session for (resumed), after
// enough challenges that the agents send full-size TLS records (Go's
// servers start with small ones). Run with -benchtime 1x.
func BenchmarkAgentConnMemory(b *testing.B) {
	const agents, rounds = 100, 16
	p := newAgentPKI(b)
	node, err := verifytest.NewNode(verifytest.P256, "node")
	if err != nil {
		b.Fatal(err)
	}
	var (
		hosts   []store.Host
		servers []*testAgent
	)
	for i := range agents {
		name := fmt.Sprintf("node-%d.test", i)
		cert, pinned := p.agentCert(b, name)
		a := p.startAgent(b, cert, node)
		hosts = append(hosts, store.Host{Name: name, URL: a.URL, AgentCert: pinned})
		servers = append(servers, a)
	}
	for _, mode := range []struct {
		name    string
		maxIdle int64
	}{{"kept", agents}, {"resumed", 0}} {
		b.Run(mode.name, func(b *testing.B) {
			for b.Loop() {
				heap := func() uint64 {
					runtime.GC()
					var m runtime.MemStats
					runtime.ReadMemStats(&m)
					return m.HeapAlloc
				}
				before := heap()
				ag := NewHTTPAgents(p.server, p.ca.VerifyAgent, mode.maxIdle)
				for range rounds {
					for _, h := range hosts {
						// Each attestation reads the host anew from the
						// store: what the client keeps of it is its own.
						h.AgentCert = bytes.Clone(h.AgentCert)
						if err := challengeOnce(b, ag, h); err != nil {
							b.Fatal(err)
						}
					}
				}
				// The agents' ends of the connections go: the heap left is
				// the server's.
				for _, a := range servers {
					a.CloseClientConnections()
				}
				time.Sleep(100 * time.Millisecond)
				after := heap()
				b.ReportMetric(float64(int64(after)-int64(before))/agents, "heap-B/agent")
				runtime.KeepAlive(ag)
				for _, h := range hosts {
					ag.Forget(h.Name)
				}
			}
		})
	}
}

// A host whose pinned certificate is not a PEM certificate is not dialled:
// nothing could match it.
func TestAgentPinNotPEM(t *testing.T) {
	ag, h, a, _ := newAgentSetup(t, 10)
	for _, pin := range [][]byte{nil, []byte("not PEM"), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")} {
		h.AgentCert = pin
		err := challengeOnce(t, ag, h)
		if err == nil || errors.Is(err, ErrAgent) || !strings.Contains(err.Error(), "not a PEM certificate") {
			t.Errorf("pin %q: err = %v, want a refusal naming the pin", pin, err)
		}
	}
	if n := a.conns.Load(); n != 0 {
		t.Errorf("the agent saw %d connections, want none", n)
	}
}

// BenchmarkResumedChallenge is one challenge on a new connection that
// resumes the agent's TLS session, with the exchange a resumption offers
// (P-256) and with the hybrid one a full handshake uses. Both ends run in
// this process, so cpu-ms/op is the server's and the agent's together.
func BenchmarkResumedChallenge(b *testing.B) {
	defer func(c []tls.CurveID) { resumeCurves = c }(resumeCurves)
	for _, c := range []struct {
		name   string
		curves []tls.CurveID
	}{{"P-256", []tls.CurveID{tls.CurveP256}}, {"X25519MLKEM768", []tls.CurveID{tls.X25519MLKEM768}}} {
		b.Run(c.name, func(b *testing.B) {
			resumeCurves = c.curves
			ag, h, a, _ := newAgentSetup(b, 0)
			if err := challengeOnce(b, ag, h); err != nil {
				b.Fatal(err)
			}
			cpu := cpuTime(b)
			for b.Loop() {
				if err := challengeOnce(b, ag, h); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/op")
			if r, n := a.resumed.Load(), a.conns.Load(); r != n-1 {
				b.Fatalf("%d of %d connections resumed, want all but the first", r, n)
			}
		})
	}
}
