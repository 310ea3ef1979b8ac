// Package agent is the trust agent that runs on every compute node. It
// enrolls the node's TPM with the attestation server (credential activation
// proves its AK and EK share one TPM), answers the server's challenges with
// TPM quotes, PCR values and event logs over mutually authenticated TLS, and
// says hello when it starts, so a rebooted node is attested at once.
//
// The agent decides nothing: everything it sends is verified by the server.
package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/httpjson"
	"trustpool/internal/pki"
	"trustpool/internal/txtlog"
)

// TPM is what the agent needs from the node's TPM (package agent/tpm).
type TPM interface {
	EK() (public, cert []byte, err error)
	AK() (public []byte, err error)
	// QuoteWithPCRs quotes sel with nonce and returns the PCR values whose
	// digest the quote signed (read, quote, compare; see tpm.QuoteWithPCRs).
	QuoteWithPCRs(nonce []byte, sel []evidence.Selection) (attest, signature []byte, pcrs []evidence.PCR, err error)
	ActivateCredential(idObject, encSecret []byte) ([]byte, error)
}

// DefaultEventLog is where Linux exposes the firmware's event log.
const DefaultEventLog = "/sys/kernel/security/tpm0/binary_bios_measurements"

// DRTMFromTXTHeap, as Config.DRTMLog, reads the DRTM event log from the
// Intel TXT heap in physical memory (PhysMem), where SINIT and tboot leave
// it (package txtlog). A file of that name is ./txt-heap.
const DRTMFromTXTHeap = "txt-heap"

// PhysMem is the device the agent reads physical memory from: it needs root
// (CAP_SYS_RAWIO); the TXT heap is reserved memory, which a kernel with
// STRICT_DEVMEM still lets it read.
const PhysMem = "/dev/mem"

// Config configures an agent.
type Config struct {
	Name     string // host name, as the scheduler knows it
	Server   string // https://host:port of the attestation server
	ServerCA []byte // PEM of the CA that signed the server's certificate
	Listen   string // address to answer challenges on (pull mode)
	// Mode is "pull" (default: the server dials Listen) or "push" (the
	// agent opens no port: it fetches challenges and posts its evidence).
	Mode string
	// Proxy chooses the proxy for the server's URL; default
	// http.ProxyFromEnvironment (HTTPS_PROXY, NO_PROXY).
	Proxy     func(*http.Request) (*url.URL, error)
	Advertise string // URL the server reaches us at; default https://<listen address>
	StateDir  string // keeps the agent's TLS key and certificate
	EventLog  string // SRTM event log file; empty: none
	DRTMLog   string // DRTM (TXT) event log file, or DRTMFromTXTHeap; empty: none
	JoinToken string // one-time admission token; empty: wait for an operator
	// PollInterval is how often a pending agent asks whether it was
	// approved (default 10 s).
	PollInterval time.Duration
	Log          *slog.Logger
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if _, err := evidence.CanonicalHostName(c.Name, true); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	}
	if c.Server == "" {
		errs = append(errs, errors.New("server URL is required"))
	}
	if len(c.ServerCA) == 0 {
		errs = append(errs, errors.New("the server's CA certificate is required"))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state directory is required"))
	}
	switch c.Mode {
	case "", evidence.ModePull:
		if c.Listen == "" {
			errs = append(errs, errors.New("listen address is required"))
		}
	case evidence.ModePush:
		if c.Advertise != "" {
			errs = append(errs, errors.New("a push agent is not reached at a URL: drop the advertised URL"))
		}
	default:
		errs = append(errs, fmt.Errorf("mode %q: want pull or push", c.Mode))
	}
	return errors.Join(errs...)
}

// Agent is a running trust agent.
type Agent struct {
	cfg    Config
	tpm    TPM
	server *httpjson.Client // the attestation server's API
	pool   *x509.CertPool
	// drtm is the DRTM log read from the TXT heap at start; nil when
	// DRTMLog is a file (read for each challenge) or empty.
	drtm []byte
}

// physMem is physical memory, as PhysMem opens it.
type physMem interface {
	io.ReaderAt
	io.Closer
}

func openPhysMem() (physMem, error) { return os.Open(PhysMem) }

// New returns an agent using t. With DRTMLog = DRTMFromTXTHeap it reads
// the DRTM log from the TXT heap now, once: the launch wrote it before the
// kernel ran and nothing appends to it afterwards, so the agent reads
// physical memory only at start, and a node where it cannot be found fails
// here with a plain error instead of at every challenge.
func New(cfg Config, t TPM) (*Agent, error) {
	return newAgent(cfg, t, openPhysMem)
}

func newAgent(cfg Config, t TPM, openMem func() (physMem, error)) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 10 * time.Second
	}
	if cfg.Proxy == nil {
		cfg.Proxy = http.ProxyFromEnvironment
	}
	cfg.Name, _ = evidence.CanonicalHostName(cfg.Name, true)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.ServerCA) {
		return nil, errors.New("agent config: no certificate in the server CA")
	}
	a := &Agent{cfg: cfg, tpm: t, pool: pool}
	if cfg.DRTMLog == DRTMFromTXTHeap {
		b, err := readTXTHeap(openMem)
		if err != nil {
			return nil, fmt.Errorf("--drtm-log %s: %w", DRTMFromTXTHeap, err)
		}
		a.drtm = b
	}
	a.server = a.serverClient(nil)
	return a, nil
}

// readTXTHeap reads the DRTM log from the TXT heap in physical memory.
func readTXTHeap(openMem func() (physMem, error)) ([]byte, error) {
	m, err := openMem()
	if err != nil {
		return nil, fmt.Errorf("read physical memory (the agent needs root for the TXT heap): %w", err)
	}
	defer m.Close()
	b, err := txtlog.Read(m)
	if err != nil {
		return nil, fmt.Errorf("read the DRTM event log from the Intel TXT heap: %w", err)
	}
	return b, nil
}

// serverClient calls the server, presenting cert when not nil: the
// server's certificate must chain to the server CA, name the server's host
// and carry the server policy, which no agent's certificate from the same
// CA has. Answers are decoded strictly, at most 1 MiB. Requests go through
// the proxy cfg.Proxy names (HTTPS_PROXY): TLS runs end to end through it.
func (a *Agent) serverClient(cert *tls.Certificate) *httpjson.Client {
	return a.serverClientTimeout(cert, 30*time.Second)
}

func (a *Agent) serverClientTimeout(cert *tls.Certificate, timeout time.Duration) *httpjson.Client {
	tc := &tls.Config{RootCAs: a.pool, MinVersion: tls.VersionTLS12, VerifyConnection: pki.RequireServer}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return &httpjson.Client{
		HTTP: &http.Client{Timeout: timeout, Transport: &http.Transport{
			TLSClientConfig: tc, Proxy: a.cfg.Proxy, TLSHandshakeTimeout: 10 * time.Second,
		}},
		Base:      a.cfg.Server,
		MaxAnswer: 1 << 20,
	}
}

// Run enrolls (when not yet enrolled with this TPM's AK), serves challenges
// and says hello, until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if a.cfg.Mode == evidence.ModePush {
		return a.runPush(ctx)
	}
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("agent listen: %w", err)
	}
	defer ln.Close()
	advertise := a.cfg.Advertise
	if advertise == "" {
		advertise = "https://" + ln.Addr().String()
	}
	cert, err := a.ensureEnrolled(ctx, advertise)
	if err != nil {
		return err
	}
	a.server = a.serverClient(&cert)
	srv := &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			// Only the attestation server (a certificate from its CA with
			// the server policy) may challenge us.
			ClientAuth:       tls.RequireAndVerifyClientCert,
			ClientCAs:        a.pool,
			VerifyConnection: pki.RequireServer,
		},
		ErrorLog: slog.NewLogLogger(a.cfg.Log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	if err := a.hello(ctx); err != nil {
		a.cfg.Log.Warn("hello failed; the server will attest on its schedule", "err", err)
	}
	a.cfg.Log.Info("agent serving challenges", "url", advertise)
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close() // a challenge still in flight: the server retries
		}
		return nil
	case err := <-errc:
		return fmt.Errorf("agent serve: %w", err)
	}
}

// Handler answers challenges at /v1/quote.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/quote", a.serveQuote)
	return mux
}

func (a *Agent) serveQuote(w http.ResponseWriter, r *http.Request) {
	var c evidence.Challenge
	if err := httpjson.Decode(w, r, 16<<10, &c); err != nil {
		httpjson.Error(w, r, a.cfg.Log, err)
		return
	}
	if err := c.Validate(); err != nil {
		httpjson.JSON(w, http.StatusBadRequest, httpjson.ErrorBody{Error: "challenge: " + err.Error()})
		return
	}
	ev, err := a.Evidence(&c)
	if err != nil {
		a.cfg.Log.Error("answer challenge", "err", err)
		httpjson.JSON(w, http.StatusInternalServerError, httpjson.ErrorBody{Error: err.Error()})
		return
	}
	httpjson.JSON(w, http.StatusOK, ev)
}

// Evidence answers challenge c: a quote over its selection with its nonce,
// the PCR values it signed, and the event logs.
func (a *Agent) Evidence(c *evidence.Challenge) (*evidence.Evidence, error) {
	attest, sig, pcrs, err := a.tpm.QuoteWithPCRs(c.Nonce, c.Selection)
	if err != nil {
		return nil, fmt.Errorf("quote: %w", err)
	}
	ev := &evidence.Evidence{Quote: attest, Signature: sig, PCRs: pcrs}
	if ev.EventLog, err = readLog(a.cfg.EventLog); err != nil {
		return nil, err
	}
	if a.drtm != nil {
		ev.DRTMLog = a.drtm
	} else if ev.DRTMLog, err = readLog(a.cfg.DRTMLog); err != nil {
		return nil, err
	}
	return ev, nil
}

func readLog(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read event log: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, evidence.MaxEventLog+1))
	if err != nil {
		return nil, fmt.Errorf("read event log %s: %w", path, err)
	}
	if len(b) > evidence.MaxEventLog {
		return nil, fmt.Errorf("event log %s exceeds %d bytes", path, evidence.MaxEventLog)
	}
	return b, nil
}

// State files.
const (
	certFile = "agent.pem"
	keyFile  = "agent-key.pem"
	akFile   = "ak.pub"
)

// ensureEnrolled returns the agent's TLS certificate, enrolling first when
// there is none or when the TPM's AK is not the one enrolled.
func (a *Agent) ensureEnrolled(ctx context.Context, advertise string) (tls.Certificate, error) {
	akPub, err := a.tpm.AK()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load AK: %w", err)
	}
	dir := a.cfg.StateDir
	if old, err := os.ReadFile(filepath.Join(dir, akFile)); err == nil && bytes.Equal(old, akPub) {
		if cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile)); err == nil {
			return cert, nil
		}
	}
	ekPub, ekCert, err := a.tpm.EK()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load EK: %w", err)
	}
	key, csr, err := pki.NewKeyAndCSR(a.cfg.Name)
	if err != nil {
		return tls.Certificate{}, err
	}
	var cred evidence.EnrollCredential
	req := evidence.EnrollRequest{Host: a.cfg.Name, EKPublic: ekPub, EKCert: ekCert, AKPublic: akPub, URL: advertise, CSR: csr, JoinToken: a.cfg.JoinToken}
	if a.cfg.Mode == evidence.ModePush {
		req.URL, req.Mode = "", evidence.ModePush
	}
	if err := a.post(ctx, "/v1/enroll", &req, &cred); err != nil {
		return tls.Certificate{}, fmt.Errorf("enroll: %w", err)
	}
	secret, err := a.tpm.ActivateCredential(cred.CredentialBlob, cred.EncryptedSecret)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("enroll: activate credential: %w", err)
	}
	var adm evidence.Admitted
	if err := a.post(ctx, "/v1/enroll/activate", &evidence.EnrollActivation{ID: cred.ID, Secret: secret}, &adm); err != nil {
		return tls.Certificate{}, fmt.Errorf("enroll: %w", err)
	}
	if adm.State == evidence.EnrollPending {
		a.cfg.Log.Info("enrollment pending: waiting for an operator's approval", "ek_fingerprint", fmt.Sprintf("%x", sha256.Sum256(ekPub)))
		if adm, err = a.awaitApproval(ctx, adm.Poll); err != nil {
			return tls.Certificate{}, fmt.Errorf("enroll: %w", err)
		}
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(adm.Cert, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("enroll: issued certificate: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("agent state: %w", err)
	}
	for name, b := range map[string][]byte{keyFile: keyPEM, certFile: adm.Cert, akFile: akPub} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return tls.Certificate{}, fmt.Errorf("agent state: %w", err)
		}
	}
	a.cfg.Log.Info("enrolled", "state", adm.State)
	return cert, nil
}

// awaitApproval polls the server until an operator approves this TPM (or
// the request expires, or ctx ends).
func (a *Agent) awaitApproval(ctx context.Context, poll string) (evidence.Admitted, error) {
	t := time.NewTicker(a.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return evidence.Admitted{}, ctx.Err()
		case <-t.C:
		}
		var adm evidence.Admitted
		if err := a.post(ctx, "/v1/enroll/poll", &evidence.EnrollPoll{Poll: poll}, &adm); err != nil {
			return evidence.Admitted{}, fmt.Errorf("poll for approval: %w", err)
		}
		if adm.State == evidence.EnrollAdmitted {
			return adm, nil
		}
	}
}

// hello tells the server this node (re)started.
func (a *Agent) hello(ctx context.Context) error {
	return a.post(ctx, "/v1/hello", &struct {
		Host string `json:"host"`
	}{a.cfg.Name}, nil)
}

func (a *Agent) post(ctx context.Context, path string, in, out any) error {
	return a.server.Do(ctx, http.MethodPost, path, in, out)
}
