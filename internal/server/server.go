// Package server assembles the attestation server: it opens the store,
// loads or creates the CA, the server certificate and the credentials in the
// state directory, builds the integrity service and the APIs (native /v1,
// Nova PollHosts, health) and runs them together.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"trustpool/internal/api"
	"trustpool/internal/auth"
	"trustpool/internal/ekcert"
	"trustpool/internal/enroll"
	"trustpool/internal/integrity"
	"trustpool/internal/knowngood"
	"trustpool/internal/kube"
	"trustpool/internal/lease"
	"trustpool/internal/metrics"
	"trustpool/internal/notify"
	"trustpool/internal/nova"
	"trustpool/internal/pki"
	"trustpool/internal/recorder"
	"trustpool/internal/store"
	"trustpool/internal/ui"
	"trustpool/internal/verdict"
)

// Files the server keeps in its state directory.
const (
	AdminTokenFile = "admin.token"
	NovaBlobFile   = "nova-auth-blob"
	dbFile         = "trustpool.db"
)

// Config configures a server.
type Config struct {
	StateDir string // required
	Listen   string // default 127.0.0.1:8443
	// Names are extra DNS names or IPs for the server certificate; the
	// listen host, localhost and 127.0.0.1 are always included.
	Names []string
	// DSN selects the store; default SQLite in the state directory.
	DSN       string
	Integrity integrity.Config
	// EKCABundle is a PEM bundle of TPM vendor CAs; with it, EK
	// certificates that agents present are verified.
	EKCABundle []byte
	// EKCRLs are the TPM vendors' revocation lists (DER or PEM), checked
	// with the bundle.
	EKCRLs [][]byte
	// RequireEKCert refuses TPMs without a valid EK certificate;
	// EKCertAdmits admits a TPM whose EK certificate verifies without a
	// join token or an approval.
	RequireEKCert, EKCertAdmits bool
	// AllowIPNames lets hosts be named by IP address.
	AllowIPNames bool
	// PendingTTL is how long an enrollment without a token waits for
	// approval (default 1 h); MaxPending caps such enrollments (default
	// 10,000); EnrollSweep is how often expired ones are deleted (default
	// 1 min).
	PendingTTL  time.Duration
	MaxPending  int
	EnrollSweep time.Duration
	// Replica names this server among the replicas sharing a PostgreSQL
	// database (default host name, process ID and a random suffix);
	// LeaseTime is how long its leases on hosts last (default 30 s): a
	// dead replica's hosts are taken over within it.
	Replica   string
	LeaseTime time.Duration
	// Placement, when set, keeps a trait on trusted hosts' resource
	// providers (current Nova).
	Placement *nova.TraitSyncConfig
	// Webhooks, when set, receive every verdict transition.
	Webhooks *notify.Config
	// Kube, when set, runs the Kubernetes node controller (package kube);
	// the server fills in its verdict cache, clock, mapping, log, metrics
	// and, unless set, its Lease identity (the replica's name).
	Kube *kube.Config
	// KubeMapping maps Nodes to hosts, for the controller and the
	// scheduler extender (mounted always, under /v1/kubernetes/).
	KubeMapping kube.Mapping
	// KubeClientCA, when set, is a PEM bundle of CAs whose client
	// certificates naming one of KubeClientNames (default
	// system:kube-scheduler) may call the extender: kube-scheduler can
	// present a certificate but no bearer token. Scheduler tokens work
	// too.
	KubeClientCA    []byte
	KubeClientNames []string
	// EnrollPerMinute bounds enrollment requests per client address
	// (default 60 a minute, burst 120).
	EnrollPerMinute float64
	// AgentConns bounds the agent connections kept open between
	// challenges, across every host: 0 DefaultAgentConns, -1 none
	// (keptAgentConns).
	AgentConns int
	Log        *slog.Logger
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if c.StateDir == "" {
		errs = append(errs, errors.New("state directory is required"))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen address %q: %w", c.Listen, err))
	}
	if (c.RequireEKCert || c.EKCertAdmits || len(c.EKCRLs) > 0) && len(c.EKCABundle) == 0 {
		errs = append(errs, errors.New("requiring EK certificates, admitting by them or checking their CRLs needs a TPM vendor CA bundle"))
	}
	if c.Placement != nil {
		if err := c.Placement.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("placement: %w", err))
		}
	}
	if c.Webhooks != nil {
		if err := c.Webhooks.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("webhooks: %w", err))
		}
	}
	if err := c.KubeMapping.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(c.KubeClientCA) > 0 {
		if _, err := certPool(c.KubeClientCA); err != nil {
			errs = append(errs, fmt.Errorf("kubernetes extender client CA: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Server is an attestation server.
type Server struct {
	cfg       Config
	store     *store.Store
	ca        *pki.CA
	cert      tls.Certificate
	integrity *integrity.Service
	metrics   *metrics.Metrics
	handler   http.Handler
	ln        net.Listener
	tasks     []func(context.Context) error // run beside the API
	routes    []string
	stopping  atomic.Bool // Run is shutting down: not ready
	// replica names this server in the database's leases and claims.
	replica string
	kube    *kube.Controller // nil without Kubernetes
	// clientCAs are the CAs whose client certificates the listener
	// accepts: the server's own (agents) and the extender's.
	clientCAs *x509.CertPool
}

// ready answers /readyz: 200 while the store answers and the server is not
// shutting down (the verdict cache and the known-good values are loaded
// before New returns), 503 with the reason otherwise, so that a load
// balancer sends schedulers elsewhere.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var reason string
	switch {
	case s.stopping.Load():
		reason = "shutting down"
	case s.store.Ping(ctx) != nil:
		reason = "the store does not answer"
	}
	if reason != "" {
		http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ok\n"))
}

// Routes lists every pattern the server serves: "METHOD /path", or a bare
// path for a handler that answers every method itself.
func (s *Server) Routes() []string { return slices.Clone(s.routes) }

// New prepares a server: state directory, credentials, store, services.
// It listens at once, so Addr is known before Run.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8443"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Integrity.Now == nil {
		cfg.Integrity.Now = time.Now
	}
	if cfg.Integrity.Log == nil {
		cfg.Integrity.Log = cfg.Log
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	now := cfg.Integrity.Now
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	adminToken, err := secretFile(filepath.Join(cfg.StateDir, AdminTokenFile))
	if err != nil {
		return nil, err
	}
	novaBlob, err := secretFile(filepath.Join(cfg.StateDir, NovaBlobFile))
	if err != nil {
		return nil, err
	}
	ca, err := pki.LoadOrCreateCA(cfg.StateDir, now)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	names := append([]string{host, "localhost", "127.0.0.1"}, cfg.Names...)
	if hn, err := os.Hostname(); err == nil {
		names = append(names, hn)
	}
	names = dedupe(names)
	cert, err := ca.LoadOrCreateServerCert(cfg.StateDir, names)
	if err != nil {
		ln.Close()
		return nil, err
	}
	dsn := cfg.DSN
	if dsn == "" {
		dsn = "sqlite:" + filepath.Join(cfg.StateDir, dbFile)
	}
	st, err := store.Open(ctx, dsn)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, store: st, ca: ca, cert: cert, ln: ln, metrics: metrics.New(), replica: cfg.Replica}
	if s.replica == "" {
		hn, _ := os.Hostname()
		s.replica = fmt.Sprintf("%s-%d-%s", hn, os.Getpid(), randomSuffix())
	}
	if err := s.wire(ctx, cfg); err != nil {
		s.Close()
		return nil, err
	}
	kg := knowngood.New(knowngood.Config{Store: st, Installer: s.integrity, Now: now})
	if err := kg.Load(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if st.Engine() == "postgres" {
		s.replicate(cfg, kg)
	}
	ecfg := enroll.Config{
		Store: st, CA: ca, Now: now, Reserved: names, AllowIPNames: cfg.AllowIPNames,
		RequireEKCert: cfg.RequireEKCert, EKCertAdmits: cfg.EKCertAdmits, Log: cfg.Log,
		PendingTTL: cfg.PendingTTL, MaxWaiting: cfg.MaxPending, SweepEvery: cfg.EnrollSweep,
		Outcome: s.metrics.Enrollment,
	}
	if len(cfg.EKCABundle) > 0 {
		v, err := ekcert.NewVerifier(cfg.EKCABundle)
		if err == nil {
			for _, crl := range cfg.EKCRLs {
				if err = v.AddCRL(crl); err != nil {
					break
				}
			}
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("EK CA bundle: %w", err)
		}
		ecfg.EKCheck = func(cert, ek []byte, now time.Time) error { _, err := v.Verify(cert, ek, now); return err }
	}
	enr := enroll.New(ecfg)
	s.tasks = append(s.tasks, enr.Run)
	authn := auth.New(auth.Config{Store: st, Bootstrap: adminToken, NovaBlob: novaBlob, Now: now, Log: cfg.Log})
	perMinute := cfg.EnrollPerMinute
	if perMinute <= 0 {
		perMinute = 60
	}
	v1 := api.New(api.Config{
		Store: st, Enroll: enr, Integrity: s.integrity, KnownGood: kg, VerifyPeer: ca.VerifyAgent,
		Tokens: auth.TokensHandler(st, now, cfg.Log), Audit: auth.AuditHandler(st, cfg.Log), AllowIPNames: cfg.AllowIPNames,
		Auth: authn, EnrollLimit: auth.NewLimiter(perMinute/60, int(2*perMinute), now), Now: now, Log: cfg.Log,
	})
	// PollHosts authenticates through the scheduler role: Nova's x-auth-blob
	// or a scheduler token; a wrong or missing one is a 401.
	poll := authn.Require(auth.RoleScheduler)(nova.NewPollHosts(nova.PollHostsConfig{Now: now}, s.integrity.Cache()))
	ext, schedAuth, err := s.extender(cfg, authn.Require(auth.RoleScheduler))
	if err != nil {
		s.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", v1)
	s.routes = v1.Routes()
	handle := func(pattern string, h http.Handler) {
		mux.Handle(pattern, h)
		s.routes = append(s.routes, pattern)
	}
	for _, p := range nova.Paths() {
		handle(p, poll) // any method: PollHosts answers 405 itself, as Nova expects
	}
	handle("POST "+kube.FilterPath, schedAuth(ext.Filter()))
	handle("POST "+kube.PrioritizePath, schedAuth(ext.Prioritize()))
	handle("GET /healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }))
	handle("GET /readyz", http.HandlerFunc(s.ready))
	handle("GET "+ui.Prefix, ui.Handler())
	// Metrics reveal the pool's state and the hosts' levels, not their
	// names: readers (and admins) may scrape them.
	handle("GET /metrics", authn.Require(auth.RoleReader)(s.metrics.Handler()))
	s.handler = mux
	return s, nil
}

// wire builds the verdict pipeline: the integrity service hands verdicts
// to the recorder, which writes each with its audit entry, webhook rows and
// trait change and then wakes the webhook deliverer and the Placement trait
// sync. Those apply the outbox rows of every replica, each row once: a row
// is claimed in the database before it is delivered.
func (s *Server) wire(ctx context.Context, cfg Config) error {
	m := s.metrics
	rcfg := recorder.Config{Store: s.store, Now: cfg.Integrity.Now, Log: cfg.Log, Metrics: m}
	var n *notify.Notifier
	if cfg.Webhooks != nil {
		wc := *cfg.Webhooks
		if wc.Log == nil {
			wc.Log = cfg.Log
		}
		if wc.Now == nil {
			wc.Now = cfg.Integrity.Now
		}
		wc.Attempted = m.WebhookDelivery
		var err error
		if n, err = notify.New(wc, s.store); err != nil {
			return fmt.Errorf("webhooks: %w", err)
		}
		rcfg.Notifications = n.Notifications
	}
	rcfg.Traits = cfg.Placement != nil
	rec := recorder.New(rcfg)
	icfg := cfg.Integrity
	icfg.Recorder = rec
	icfg.Appraised = m.Appraisal
	agents := integrity.NewHTTPAgents(s.cert, s.ca.VerifyAgent, keptAgentConns(cfg.AgentConns, icfg.Interval))
	agents.Observe = m.Challenge
	s.integrity = integrity.New(icfg, s.store, agents)
	if err := s.integrity.Load(ctx); err != nil {
		return err
	}
	gauges := metrics.Gauges{
		Hosts: func() map[verdict.Level]int {
			now, out := cfg.Integrity.Now(), map[verdict.Level]int{}
			for _, v := range rec.Cache().Snapshot() {
				out[v.At(now)]++
			}
			return out
		},
		CacheSize: func() int { return len(rec.Cache().Snapshot()) },
		Overdue:   s.integrity.Overdue,
	}
	depth := func(pick func(store.Depth) int) func() int {
		return func() int {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			d, err := s.store.OutboxDepth(ctx)
			if err != nil {
				return -1
			}
			return pick(d)
		}
	}
	if n != nil {
		gauges.WebhookInFlight = n.InFlight
		gauges.WebhookOutbox = depth(func(d store.Depth) int { return d.Webhooks })
	}
	if cfg.Placement != nil {
		gauges.TraitOutbox = depth(func(d store.Depth) int { return d.Traits })
	}
	m.Watch(gauges)
	s.tasks = append(s.tasks, rec.Run)
	if n != nil {
		rec.OnChange(func(verdict.Verdict, verdict.Level) { n.Wake() })
		s.tasks = append(s.tasks, n.Run)
	}
	if cfg.Placement != nil {
		pc := *cfg.Placement
		if pc.Logger == nil {
			pc.Logger = cfg.Log
		}
		pc.Failed = m.PlacementFailure
		pc.Owner = s.replica
		if pc.Now == nil {
			pc.Now = cfg.Integrity.Now
		}
		ts, err := nova.NewTraitSync(pc, rec.Cache(), s.store)
		if err != nil {
			return fmt.Errorf("placement: %w", err)
		}
		rec.OnChange(func(verdict.Verdict, verdict.Level) { ts.Wake() })
		s.tasks = append(s.tasks, ts.Run)
	}
	if cfg.Kube != nil {
		kc := *cfg.Kube
		kc.Verdicts, kc.Now, kc.Mapping = rec.Cache(), cfg.Integrity.Now, cfg.KubeMapping
		if kc.Log == nil {
			kc.Log = cfg.Log
		}
		if kc.Identity == "" {
			kc.Identity = s.replica
		}
		m.Kube()
		kc.APIError, kc.TaintChanged, kc.Leading = m.KubeAPIError, m.KubeTaintChange, m.KubeLeading
		ctl, err := kube.New(kc)
		if err != nil {
			return err
		}
		rec.OnChange(func(v verdict.Verdict, _ verdict.Level) { ctl.Changed(v.Host) })
		s.kube = ctl
		s.tasks = append(s.tasks, ctl.Run)
	}
	return nil
}

// extender builds the Kubernetes scheduler extender and its
// authentication: a scheduler token (tokens), or kube-scheduler's client
// certificate from the configured CA. It also sets the CAs the listener
// accepts client certificates from.
func (s *Server) extender(cfg Config, tokens func(http.Handler) http.Handler) (*kube.Extender, func(http.Handler) http.Handler, error) {
	ecfg := kube.ExtenderConfig{Verdicts: s.integrity.Cache(), Now: cfg.Integrity.Now, Mapping: cfg.KubeMapping, Log: cfg.Log}
	if s.kube != nil {
		ecfg.Nodes = s.kube
	}
	ext, err := kube.NewExtender(ecfg)
	if err != nil {
		return nil, nil, err
	}
	s.clientCAs = s.ca.Pool()
	if len(cfg.KubeClientCA) == 0 {
		return ext, tokens, nil
	}
	roots, err := certPool(cfg.KubeClientCA)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes extender client CA: %w", err)
	}
	// Agents' certificates are checked against the server's CA alone
	// (pki.VerifyAgent), the scheduler's against roots alone: one more
	// CA on the listener lets neither pass as the other.
	s.clientCAs.AppendCertsFromPEM(cfg.KubeClientCA)
	names := cfg.KubeClientNames
	if len(names) == 0 {
		names = []string{"system:kube-scheduler"}
	}
	certs := &kube.ClientCerts{Roots: roots, Names: names, Now: cfg.Integrity.Now}
	return ext, certs.Or(tokens), nil
}

// certPool parses a PEM bundle of CA certificates; it must hold one.
func certPool(bundle []byte) (*x509.CertPool, error) {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(bundle) {
		return nil, errors.New("no PEM certificate in the bundle")
	}
	return p, nil
}

// replicate makes this server one of the replicas sharing its PostgreSQL
// database: it attests the hosts it holds leases on (package lease), and
// follows the others' verdicts, deletions and known-good changes through
// the store's change feed.
func (s *Server) replicate(cfg Config, kg *knowngood.DB) {
	s.integrity.Hold(nil) // nothing until the first leases are held
	keeper := lease.New(lease.Config{Store: s.store, Owner: s.replica, For: cfg.LeaseTime, Now: cfg.Integrity.Now,
		Held: s.integrity.Hold, Log: cfg.Log})
	rec := s.integrity.Recorder()
	follow := func(ctx context.Context) error {
		return s.store.Listen(ctx, func(c store.Change) {
			if c.Kind != store.ChangeKnownGood {
				if err := rec.Follow(ctx, c); err != nil && ctx.Err() == nil {
					cfg.Log.Error("follow another replica's verdict", "host", c.Host, "err", err)
				}
			}
			if c.Kind == store.ChangeKnownGood || c.Kind == store.ChangeLost {
				if err := kg.Load(ctx); err != nil && ctx.Err() == nil {
					cfg.Log.Error("follow another replica's known-good change", "err", err)
				}
			}
		})
	}
	s.tasks = append(s.tasks, keeper.Run, follow)
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the server's base URL.
func (s *Server) URL() string { return "https://" + s.Addr() }

// CAPEM is the PEM of the CA agents and clients must trust.
func (s *Server) CAPEM() []byte { return s.ca.CertPEM }

// Store is the server's store.
func (s *Server) Store() *store.Store { return s.store }

// Integrity is the server's integrity service.
func (s *Server) Integrity() *integrity.Service { return s.integrity }

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Run serves until ctx ends, then shuts down.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{s.cert},
			// Agents present their certificate for hello; others need none.
			// Certificates are checked on the clock that issued them.
			ClientAuth: tls.VerifyClientCertIfGiven,
			ClientCAs:  s.clientCAs,
			Time:       s.cfg.Integrity.Now,
		},
		ErrorLog: slog.NewLogLogger(s.cfg.Log.Handler(), slog.LevelDebug),
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tasks := append([]func(context.Context) error{s.integrity.Run}, s.tasks...)
	errc := make(chan error, len(tasks)+1)
	for _, t := range tasks {
		go func() { errc <- t(ctx) }()
	}
	go func() {
		err := srv.ServeTLS(s.ln, "", "")
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	s.stopping.Store(true)
	cancel()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	return err
}

// Close releases the listener and the store.
func (s *Server) Close() error {
	s.ln.Close()
	return s.store.Close()
}

// secretFile reads a secret from path, creating a random one on first use.
func secretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	t := base64.RawURLEncoding.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return t, nil
}

func dedupe(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// DefaultAgentConns is how many agent connections the server keeps open
// between challenges by default. A kept connection spares each challenge
// a TLS handshake (some 0.4 ms of the server's CPU) but holds some 25 KB
// of TLS state, 70 KB of the process's memory; a fleet larger than this
// is mostly dialled at each challenge, resuming TLS sessions. At 10,000
// nodes, 1,024 kept cost 3 KB of memory a node more than 256 and spare
// some 0.03 ms an attestation (BENCHMARKS.md, "Agent connections").
const DefaultAgentConns = 256

// keptAgentConns is how many agent connections the server keeps open
// between challenges for Config.AgentConns want: none when negative or
// when the interval between a host's challenges is longer than a kept
// connection is reused (integrity.MaxConnIdle: it would only hold memory
// and a file until the next round closed it), DefaultAgentConns when
// zero, and never more than the open-file limit (which Go raises to the
// hard limit at start) less a reserve for the API's clients, the database
// and challenges in flight.
func keptAgentConns(want int, interval time.Duration) int64 {
	if want < 0 || interval >= integrity.MaxConnIdle {
		return 0
	}
	if want == 0 {
		want = DefaultAgentConns
	}
	const reserve = 4096
	var l syscall.Rlimit
	budget := int64(256)
	switch err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); {
	case err != nil:
	case l.Cur < 2*reserve:
		budget = int64(l.Cur / 4) // a small limit: a quarter of it
	default:
		budget = int64(min(l.Cur, 1<<30) - reserve)
	}
	return min(int64(want), budget)
}
