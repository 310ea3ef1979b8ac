package tamper_test

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/integrity"
	"trustpool/internal/pki"
	"trustpool/internal/store"
	"trustpool/internal/verify/verifytest"
)

// answerFunc makes the body a simulated agent answers a challenge with.
type answerFunc func(n *verifytest.Node, c *evidence.Challenge) ([]byte, error)

// simAgent is a simulated node (a verifytest software AK and boot logs)
// behind an HTTPS endpoint that speaks the trust agent's protocol: mutual
// TLS with the certificate enrollment issues, POST /v1/quote. A test swaps
// its answer or its certificate to play a compromised node.
type simAgent struct {
	name string
	url  string
	node *verifytest.Node

	own     *tls.Certificate // the certificate enrollment issued
	clients *x509.CertPool   // whom it answers: the server's CA

	mu     sync.Mutex // guards the fields below
	answer answerFunc // nil: answer honestly
	// tls is the agent's TLS configuration: one per certificate,
	// since each has its own session ticket keys. An impostor taking over
	// the address with another certificate cannot resume the sessions the
	// real agent's keys sealed.
	tls *tls.Config
	// hang, when set, makes the agent accept the challenge and never answer.
	hang bool
}

func honestAnswer(n *verifytest.Node, c *evidence.Challenge) ([]byte, error) {
	ev, err := n.EvidenceFor(c.Nonce, c.Selection)
	if err != nil {
		return nil, err
	}
	return json.Marshal(ev)
}

// identicalNode is a simulated node of the fleet's one machine model with a
// measured launch: every such node measures the same digests, so one golden
// host's references fit them all.
func identicalNode(t *testing.T) *verifytest.Node {
	t.Helper()
	n, err := verifytest.NewNode(verifytest.RSA2048, "model")
	if err != nil {
		t.Fatal(err)
	}
	n.EventLog = verifytest.BootLog("same-model").Bytes()
	n.DRTMLog = verifytest.DRTMLog("kvm-6.1.0-28-amd64").Bytes()
	return n
}

// addSim starts a simulated node's agent and stores the host as an
// enrollment would have admitted it: active, with its AK, its URL and an
// agent certificate from the server's CA. (Credential activation needs a
// TPM; the swtpm cases and package enroll cover it.)
func (f *fixture) addSim(name string) *simAgent {
	f.t.Helper()
	a := &simAgent{name: name, node: identicalNode(f.t), clients: f.ca.Pool()}
	certPEM, cert := f.agentCert(name)
	a.own = cert
	a.setCert(cert)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	a.url = "https://" + ln.Addr().String()
	srv := &http.Server{
		Handler:           a,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return a.tlsConfig(), nil },
		},
		ErrorLog: discardLog(),
	}
	// Every challenge is a new connection: an impostor taking over the
	// address cannot inherit a TLS session the real agent authenticated.
	srv.SetKeepAlivesEnabled(false)
	go srv.ServeTLS(ln, "", "")
	f.t.Cleanup(func() { srv.Close() })
	now := f.clock.Now()
	if err := f.srv.Store().PutHost(f.ctx, store.Host{
		Name: name, State: store.HostActive, EKPublic: []byte("simulated EK of " + name),
		AKPublic: a.node.AK.Public(), AKName: a.node.AK.Name(), URL: a.url, AgentCert: certPEM,
		CreatedAt: now, UpdatedAt: now,
	}); err != nil {
		f.t.Fatal(err)
	}
	f.sims[name] = a
	return a
}

// agentCert issues the certificate enrollment gives host's agent.
func (f *fixture) agentCert(host string) ([]byte, *tls.Certificate) {
	f.t.Helper()
	return issueCert(f.t, f.ca, host)
}

func issueCert(t *testing.T, ca *pki.CA, host string) ([]byte, *tls.Certificate) {
	t.Helper()
	key, csr, err := pki.NewKeyAndCSR(host)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignAgentCSR(csr, host)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, &cert
}

// set makes the agent answer with f (nil: honestly) until the next set.
func (a *simAgent) set(f answerFunc) {
	a.mu.Lock()
	a.answer = f
	a.mu.Unlock()
}

// setHang makes the agent read every challenge and never answer.
func (a *simAgent) setHang() {
	a.mu.Lock()
	a.hang = true
	a.mu.Unlock()
}

// setCert makes the agent present c from the next handshake on, with
// session ticket keys of its own.
func (a *simAgent) setCert(c *tls.Certificate) {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*c},
		// Like the real agent: only the attestation server may ask.
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  a.clients,
	}
	var key [32]byte
	rand.Read(key[:])
	cfg.SetSessionTicketKeys([][32]byte{key})
	a.mu.Lock()
	a.tls = cfg
	a.mu.Unlock()
}

func (a *simAgent) tlsConfig() *tls.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tls
}

func (a *simAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != integrity.QuotePath {
		http.NotFound(w, r)
		return
	}
	a.mu.Lock()
	answer, hang := a.answer, a.hang
	a.mu.Unlock()
	if hang {
		<-r.Context().Done() // the server hung up
		return
	}
	var c evidence.Challenge
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<10)).Decode(&c); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if answer == nil {
		answer = honestAnswer
	}
	body, err := answer(a.node, &c)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// hungListener accepts TCP connections and never says a word: an agent
// whose process is wedged, or a network attacker who swallows the challenge.
func hungListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "https://" + ln.Addr().String()
}
