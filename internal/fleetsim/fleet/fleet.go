// Package fleet is test equipment: a fleet of simulated compute nodes, for
// `trustpool bench fleet` and the fleet check. A Fleet runs in one process;
// bench fleet spreads a large one over simulator processes (proc.go), each
// a Fleet of one slice of the nodes driven by its parent through a Proc, so
// that no process's open-file limit bounds the fleet. Every node
// has its own identity, as a real one does: an RSA-2048 EK in the TCG
// default template and an AK (package fleetsim's software keys, real TPM 2.0
// public areas), its own loopback address (127.0.0.0/8 is loopback on Linux;
// each node's listener is bound to its exact address and its client calls
// leave from it), and its own agent certificate, obtained through the
// server's real enrollment API with a join token and a credential
// activation computed in software with the node's EK private key. It then
// speaks to the server exactly as internal/agent does: mutually
// authenticated TLS, the server's certificate required to carry the server
// policy (pki.RequireServer) both when it calls the server and when it is
// challenged, quotes as real TPMS_ATTEST structures signed by the AK, TCG
// event logs, and a hello after every (simulated) boot. In push mode
// (Config.Mode, push.go) a node opens no port and pushes its evidence
// instead, as `trustpool agent --mode push` does.
//
// Nothing here is secure: every key lives in process memory. The server
// does not know the fleet is simulated; production code other than the
// bench command must not import this package (internal/deps_test.go).
package fleet

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/fleetsim"
	"trustpool/internal/httpjson"
	"trustpool/internal/pki"
)

// Model is the hardware model every node of the fleet shares: its firmware
// and boot chain measure the same, as in a fleet of one server model, so a
// golden import from one node makes the whole fleet trusted.
const Model = "fleet model r650"

// Hypervisor is what a node's measured launch loads; Tampered what a
// tampered reboot loads instead (a different PCR 18 and 19).
const (
	Hypervisor = "kvm-6.8.0-41"
	Tampered   = "kvm-6.8.0-41 with an implant"
)

// Config configures a fleet.
type Config struct {
	Server   string // https://host:port of the attestation server (loopback)
	ServerCA []byte // PEM of the server's CA
	Nodes    int
	// Domain makes the host names node-00001.<Domain>; default fleet.test.
	Domain string
	AK     fleetsim.Alg
	// KeyCache is the RSA key cache file (fleetsim.RSAKeys); "" generates.
	// Node i of the whole fleet takes key i (P-256 AKs) or keys 2i and
	// 2i+1 (EK, RSA AK).
	KeyCache string
	// SharedKeyCache reads the fleet's keys from KeyCache and never writes
	// it: the fleet is a slice of one spread over processes, whose parent
	// filled the cache first (fleetsim.FillRSAKeys).
	SharedKeyCache bool
	// First is the fleet's first node in a larger fleet spread over
	// processes (proc.go): its nodes are numbered, addressed and keyed
	// from there on, so slices never share a name, an address or a key.
	First int
	// FirstIP is the address of node 0 of the whole fleet (default
	// 127.20.0.1); the others follow, skipping addresses that end in .0
	// or .255.
	FirstIP netip.Addr
	// JoinToken returns a one-time join token for host: the operator's part
	// of an admission (POST /v1/join-tokens as admin).
	JoinToken func(ctx context.Context, host string) (string, error)
	// Workers bounds concurrent enrollments and hellos (default 16).
	Workers int
	// NoKeepAlive closes each challenge's connection after the answer, as
	// an agent never does: a node then holds one file (its listener)
	// instead of two, for fleets larger than half the open-file limit, and
	// the server pays a TLS handshake per attestation.
	NoKeepAlive bool
	// Mode is the nodes' agent mode: "pull" (the default: each node listens
	// and the server challenges it) or "push" (push.go: a node opens no
	// port, enrolls without a URL and pushes its evidence, as `trustpool
	// agent --mode push` does).
	Mode string
	// Progress, when set, is told how many nodes Enroll ("enrolled") and
	// Hello ("said hello") have done, as they go.
	Progress func(stage string, done, total int)
	Log      *slog.Logger
}

// Fleet is a running fleet.
type Fleet struct {
	cfg    Config
	pool   *x509.CertPool
	nodes  []*Node
	byAddr map[netip.Addr]*Node
	byName map[string]*Node
	srv    *http.Server
	port   int
	served sync.WaitGroup

	answered atomic.Int64 // challenges answered
	failed   atomic.Int64 // challenges refused or not answered
	mu       sync.Mutex   // guards answer and gap
	answer   []time.Duration
	gap      []time.Duration
	bootsMu  sync.Mutex // guards boots
	boots    map[string]*boot
	// trip is push mode's round trip: a challenge requested to the verdict
	// of its evidence read (guarded by mu).
	trip []time.Duration

	// Push mode's loops (push.go): ctx ends them at Close.
	ctx     context.Context
	stop    context.CancelFunc
	loopsMu sync.Mutex // guards closed, and loops.Go against loops.Wait
	closed  bool
	loops   sync.WaitGroup
}

// Node is one simulated compute node.
type Node struct {
	Name string
	Addr netip.Addr
	URL  string

	ek   *fleetsim.SoftEK
	ak   *fleetsim.SoftAK
	boot atomic.Pointer[boot]
	cert atomic.Pointer[tls.Certificate]
	api  atomic.Pointer[httpjson.Client] // the server's API, with the node's certificate once enrolled
	last atomic.Int64                    // unix nanoseconds of the latest challenge

	f *Fleet
	// Push mode: wait is the long-poll client (sharing api's transport);
	// kick carries a hello to the node's push loop, which answers on the
	// channel sent once it has pushed; started says the loop runs.
	wait    atomic.Pointer[httpjson.Client]
	kick    chan chan error
	started sync.Once
}

// boot is what a node measured at its latest boot. Nodes that booted the
// same software share one (read-only): a node's memory is its keys.
type boot struct {
	node *fleetsim.Node
	pcrs map[evidence.Bank][evidence.NumPCRs][]byte
}

func (f *Fleet) bootOf(hypervisor string) (*boot, error) {
	f.bootsMu.Lock()
	defer f.bootsMu.Unlock()
	if b, ok := f.boots[hypervisor]; ok {
		return b, nil
	}
	n := &fleetsim.Node{EventLog: fleetsim.BootLog(Model).Bytes(), DRTMLog: fleetsim.DRTMLog(hypervisor).Bytes()}
	b := &boot{node: n, pcrs: map[evidence.Bank][evidence.NumPCRs][]byte{}}
	for _, bank := range []evidence.Bank{evidence.SHA1, evidence.SHA256} { // the banks the logs carry
		v, err := n.PCRs(bank)
		if err != nil {
			return nil, err
		}
		b.pcrs[bank] = v
	}
	f.boots[hypervisor] = b
	return b, nil
}

// maxSamples bounds the latency samples kept (a 10,000-node run at a 60 s
// interval answers 500,000 challenges in 50 minutes).
const maxSamples = 1 << 20

// AdminJoinTokens is a Config.JoinToken for an operator who is admin, a
// client of the server's API with an admin token: each token is issued by
// POST /v1/join-tokens.
func AdminJoinTokens(admin *httpjson.Client) func(ctx context.Context, host string) (string, error) {
	return func(ctx context.Context, host string) (string, error) {
		var tok struct {
			Token string `json:"token"`
		}
		err := admin.Do(ctx, http.MethodPost, "/v1/join-tokens", map[string]string{"host": host}, &tok)
		return tok.Token, err
	}
}

// New makes the fleet's nodes and binds each node's listener; nothing is
// sent until Enroll.
func New(cfg Config) (*Fleet, error) {
	if cfg.Nodes <= 0 || cfg.First < 0 {
		return nil, errors.New("fleet: no nodes")
	}
	if cfg.Domain == "" {
		cfg.Domain = "fleet.test"
	}
	if !cfg.FirstIP.IsValid() {
		cfg.FirstIP = netip.AddrFrom4([4]byte{127, 20, 0, 1})
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.JoinToken == nil {
		return nil, errors.New("fleet: no join token source")
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = evidence.ModePull
	case evidence.ModePull, evidence.ModePush:
	default:
		return nil, fmt.Errorf("fleet: mode %q: want pull or push", cfg.Mode)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.ServerCA) {
		return nil, errors.New("fleet: no certificate in the server CA")
	}
	addrs, err := addresses(cfg.FirstIP, cfg.First+cfg.Nodes)
	if err != nil {
		return nil, err
	}
	addrs = addrs[cfg.First:]
	keys, err := nodeKeys(cfg)
	if err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, pool: pool, byAddr: make(map[netip.Addr]*Node, cfg.Nodes), byName: make(map[string]*Node, cfg.Nodes), boots: map[string]*boot{}}
	f.ctx, f.stop = context.WithCancel(context.Background())
	per := KeysPerNode(cfg.AK)
	for i := range cfg.Nodes {
		ek, err := fleetsim.NewSoftEKWith(keys[per*i])
		if err != nil {
			return nil, err
		}
		var ak *fleetsim.SoftAK
		if cfg.AK == fleetsim.P256 {
			ak, err = fleetsim.NewSoftAK(fleetsim.P256)
		} else {
			ak, err = fleetsim.NewSoftAKWith(cfg.AK, keys[per*i+1])
		}
		if err != nil {
			return nil, err
		}
		b, err := f.bootOf(Hypervisor)
		if err != nil {
			return nil, err
		}
		nd := &Node{Name: fmt.Sprintf("node-%05d.%s", cfg.First+i+1, cfg.Domain), Addr: addrs[i], ek: ek, ak: ak, f: f, kick: make(chan chan error, 1)}
		nd.boot.Store(b)
		f.nodes = append(f.nodes, nd)
		f.byAddr[nd.Addr] = nd
		f.byName[nd.Name] = nd
	}
	if cfg.Mode == evidence.ModePush {
		return f, nil // a push node opens no port
	}
	if err := f.listen(); err != nil {
		return nil, err
	}
	return f, nil
}

// KeysPerNode is how many RSA keys of the cache a node takes: its EK's,
// and its AK's unless the AK is P-256.
func KeysPerNode(ak fleetsim.Alg) int {
	if ak == fleetsim.P256 {
		return 1
	}
	return 2
}

// nodeKeys returns the RSA keys of cfg's nodes, in node order.
func nodeKeys(cfg Config) ([]*rsa.PrivateKey, error) {
	per := KeysPerNode(cfg.AK)
	first, n := per*cfg.First, per*cfg.Nodes
	switch {
	case cfg.SharedKeyCache && cfg.KeyCache != "":
		return fleetsim.CachedRSAKeys(cfg.KeyCache, first, n)
	case cfg.KeyCache == "":
		return fleetsim.RSAKeys(n, "")
	}
	keys, err := fleetsim.RSAKeys(first+n, cfg.KeyCache)
	if err != nil {
		return nil, err
	}
	return keys[first:], nil
}

// addresses returns n loopback addresses from first on, skipping .0 and
// .255 (valid on loopback, but easy to mistake for network and broadcast).
func addresses(first netip.Addr, n int) ([]netip.Addr, error) {
	if !first.Is4() || !netip.MustParsePrefix("127.0.0.0/8").Contains(first) {
		return nil, fmt.Errorf("fleet: first address %s is not in 127.0.0.0/8", first)
	}
	var out []netip.Addr
	for a := first; len(out) < n; a = a.Next() {
		if !netip.MustParsePrefix("127.0.0.0/8").Contains(a) {
			return nil, fmt.Errorf("fleet: %d nodes do not fit in 127.0.0.0/8 from %s", n, first)
		}
		if b := a.As4(); b[3] != 0 && b[3] != 255 {
			out = append(out, a)
		}
	}
	return out, nil
}

// listen binds every node's listener to its own address on one port (the
// first node's, chosen by the kernel), so each node has its own URL, and
// serves challenges on all of them.
func (f *Fleet) listen() error {
	f.srv = &http.Server{
		Handler:           http.HandlerFunc(f.serveQuote),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(f.cfg.Log.Handler(), slog.LevelDebug),
	}
	f.srv.SetKeepAlivesEnabled(!f.cfg.NoKeepAlive)
	var lns []net.Listener
	for i, nd := range f.nodes {
		ln, err := net.Listen("tcp", netip.AddrPortFrom(nd.Addr, uint16(f.port)).String())
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("fleet: listen for %s on %s: %w (raise the open-file limit for large fleets)", nd.Name, nd.Addr, err)
		}
		if i == 0 {
			f.port = ln.Addr().(*net.TCPAddr).Port
		}
		nd.URL = "https://" + netip.AddrPortFrom(nd.Addr, uint16(f.port)).String()
		lns = append(lns, ln)
	}
	for i, ln := range lns {
		nd := f.nodes[i]
		tc := &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				if c := nd.cert.Load(); c != nil {
					return c, nil
				}
				return nil, errors.New("node not enrolled yet")
			},
			// Only the attestation server may challenge a node.
			ClientAuth:       tls.RequireAndVerifyClientCert,
			ClientCAs:        f.pool,
			VerifyConnection: pki.RequireServer,
		}
		f.served.Go(func() { f.srv.Serve(tls.NewListener(ln, tc)) })
	}
	return nil
}

// Nodes returns the fleet's nodes.
func (f *Fleet) Nodes() []*Node { return f.nodes }

// Node returns the node named name, or nil.
func (f *Fleet) Node(name string) *Node { return f.byName[name] }

// Mode returns the nodes' agent mode, "pull" or "push".
func (f *Fleet) Mode() string { return f.cfg.Mode }

// Close stops serving challenges, and the push loops.
func (f *Fleet) Close() error {
	f.loopsMu.Lock()
	f.closed = true
	f.loopsMu.Unlock()
	f.stop()
	f.loops.Wait()
	if f.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := f.srv.Shutdown(ctx)
	if err != nil {
		f.srv.Close()
	}
	f.served.Wait()
	return err
}

func (f *Fleet) serveQuote(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost || r.URL.Path != "/v1/quote" {
		http.NotFound(w, r)
		return
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	var nd *Node
	if ta, ok := local.(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		nd = f.byAddr[a.Unmap()]
	}
	if nd == nil {
		f.failed.Add(1)
		http.NotFound(w, r)
		return
	}
	var c evidence.Challenge
	if err := httpjson.Decode(w, r, 16<<10, &c); err != nil {
		f.failed.Add(1)
		httpjson.Error(w, r, f.cfg.Log, err)
		return
	}
	if err := c.Validate(); err != nil {
		f.failed.Add(1)
		httpjson.JSON(w, http.StatusBadRequest, httpjson.ErrorBody{Error: "challenge: " + err.Error()})
		return
	}
	ev, err := nd.evidence(&c)
	if err != nil {
		f.failed.Add(1)
		httpjson.JSON(w, http.StatusInternalServerError, httpjson.ErrorBody{Error: err.Error()})
		return
	}
	httpjson.JSON(w, http.StatusOK, ev)
	f.answered.Add(1)
	f.sample(nd, start, time.Since(start), 0)
}

// sample records an answered challenge: its answer time, the gap since the
// node's previous challenge (start is this one's) and, in push mode, the
// round trip (0: none).
func (f *Fleet) sample(nd *Node, start time.Time, answer, trip time.Duration) {
	prev := nd.last.Swap(start.UnixNano())
	f.mu.Lock()
	if len(f.answer) < maxSamples {
		f.answer = append(f.answer, answer)
		if prev != 0 {
			f.gap = append(f.gap, start.Sub(time.Unix(0, prev)))
		}
		if trip > 0 {
			f.trip = append(f.trip, trip)
		}
	}
	f.mu.Unlock()
}

// evidence answers c as the agent does: a quote of c's selection with its
// nonce, the PCR values it signed, and the event logs of the latest boot.
func (nd *Node) evidence(c *evidence.Challenge) (*evidence.Evidence, error) {
	b := nd.boot.Load()
	var pcrs []evidence.PCR
	for _, s := range c.Selection {
		vals, ok := b.pcrs[s.Bank]
		if !ok {
			return nil, fmt.Errorf("no PCR bank %s", s.Bank)
		}
		for _, p := range s.PCRs {
			pcrs = append(pcrs, evidence.PCR{Bank: s.Bank, Index: p, Digest: vals[p]})
		}
	}
	quote, sig, err := nd.ak.Quote(c.Nonce, c.Selection, pcrs)
	if err != nil {
		return nil, err
	}
	return &evidence.Evidence{Quote: quote, Signature: sig, PCRs: pcrs, EventLog: b.node.EventLog, DRTMLog: b.node.DRTMLog}, nil
}

// client returns a client of the server's API that leaves from the node's
// own address, requires the server's certificate to carry the server
// policy, and presents cert when not nil.
func (f *Fleet) client(nd *Node, cert *tls.Certificate) *httpjson.Client {
	tc := &tls.Config{RootCAs: f.pool, MinVersion: tls.VersionTLS12, VerifyConnection: pki.RequireServer}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: nd.Addr.AsSlice()}, Timeout: 10 * time.Second}
	return &httpjson.Client{
		HTTP:      &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DialContext: d.DialContext, MaxIdleConnsPerHost: 1}},
		Base:      f.cfg.Server,
		MaxAnswer: 1 << 20,
	}
}

// Enroll admits every node that has no certificate yet, Workers at a time:
// a join token, POST /v1/enroll, the credential activation with the node's
// EK, POST /v1/enroll/activate. It returns how many nodes are enrolled, and
// the errors of those that are not.
func (f *Fleet) Enroll(ctx context.Context) (int, error) {
	errs := f.each(ctx, "enrolled", func(ctx context.Context, nd *Node) error {
		if nd.cert.Load() != nil {
			return nil
		}
		return f.enroll(ctx, nd)
	})
	n := 0
	for _, nd := range f.nodes {
		if nd.cert.Load() != nil {
			n++
		}
	}
	return n, errs
}

func (f *Fleet) enroll(ctx context.Context, nd *Node) error {
	tok, err := f.cfg.JoinToken(ctx, nd.Name)
	if err != nil {
		return fmt.Errorf("join token for %s: %w", nd.Name, err)
	}
	key, csr, err := pki.NewKeyAndCSR(nd.Name)
	if err != nil {
		return err
	}
	c := f.client(nd, nil)
	defer c.HTTP.CloseIdleConnections()
	var cred evidence.EnrollCredential
	req := evidence.EnrollRequest{Host: nd.Name, EKPublic: nd.ek.Public(), AKPublic: nd.ak.Public(), URL: nd.URL, CSR: csr, JoinToken: tok}
	if f.cfg.Mode == evidence.ModePush {
		req.Mode = evidence.ModePush // and no URL: nd.URL is empty
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/enroll", &req, &cred); err != nil {
		return fmt.Errorf("enroll %s: %w", nd.Name, err)
	}
	secret, err := nd.ek.ActivateCredential(nd.ak.Name(), cred.CredentialBlob, cred.EncryptedSecret)
	if err != nil {
		return fmt.Errorf("enroll %s: %w", nd.Name, err)
	}
	var adm evidence.Admitted
	if err := c.Do(ctx, http.MethodPost, "/v1/enroll/activate", &evidence.EnrollActivation{ID: cred.ID, Secret: secret}, &adm); err != nil {
		return fmt.Errorf("enroll %s: %w", nd.Name, err)
	}
	if adm.State != evidence.EnrollAdmitted {
		return fmt.Errorf("enroll %s: state %q after activation with a join token", nd.Name, adm.State)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(adm.Cert, keyPEM)
	if err != nil {
		return fmt.Errorf("enroll %s: issued certificate: %w", nd.Name, err)
	}
	nd.cert.Store(&cert)
	api := f.client(nd, &cert)
	if f.cfg.Mode == evidence.ModePush {
		// The verdict carries more than a node reads; the long-poll is
		// held up to 55 s, longer than api's timeout, on the same
		// connection.
		api.AllowUnknownFields = true
		nd.wait.Store(&httpjson.Client{HTTP: &http.Client{Timeout: waitTimeout, Transport: api.HTTP.Transport}, Base: api.Base, MaxAnswer: api.MaxAnswer})
	}
	nd.api.Store(api)
	return nil
}

// Hello has every enrolled node say hello (as after its boot), Workers at a
// time.
func (f *Fleet) Hello(ctx context.Context) error {
	return f.each(ctx, "said hello", func(ctx context.Context, nd *Node) error { return nd.Hello(ctx) })
}

// Hello tells the server the node (re)booted, with its certificate. A
// push node's hello is an immediate push (its agent starts with one): the
// first starts the node's push loop; Hello returns once the push is
// answered.
func (nd *Node) Hello(ctx context.Context) error {
	c := nd.api.Load()
	if c == nil {
		return fmt.Errorf("hello from %s: not enrolled", nd.Name)
	}
	if nd.f.cfg.Mode == evidence.ModePush {
		return nd.f.helloPush(ctx, nd)
	}
	defer c.HTTP.CloseIdleConnections()
	return c.Do(ctx, http.MethodPost, "/v1/hello", &struct {
		Host string `json:"host"`
	}{nd.Name}, nil)
}

// Reboot makes the node boot again with hypervisor in its measured launch:
// its DRTM event log and PCRs 17-19 change; later quotes report them.
func (f *Fleet) Reboot(nd *Node, hypervisor string) error {
	b, err := f.bootOf(hypervisor)
	if err != nil {
		return err
	}
	nd.boot.Store(b)
	return nil
}

// each runs fn for every node, Workers at a time, reports its progress as
// stage, and joins the errors (the first 10, and a count of the rest).
func (f *Fleet) each(ctx context.Context, stage string, fn func(context.Context, *Node) error) error {
	work := make(chan *Node)
	var (
		mu   sync.Mutex // guards errs, more and done
		errs []error
		more int
		done int
		wg   sync.WaitGroup
	)
	for range f.cfg.Workers {
		wg.Go(func() {
			for nd := range work {
				err := fn(ctx, nd)
				mu.Lock()
				switch {
				case err == nil:
				case len(errs) < 10:
					errs = append(errs, err)
				default:
					more++
				}
				done++
				if f.cfg.Progress != nil {
					f.cfg.Progress(stage, done, len(f.nodes))
				}
				mu.Unlock()
			}
		})
	}
	for _, nd := range f.nodes {
		if ctx.Err() != nil {
			break
		}
		work <- nd
	}
	close(work)
	wg.Wait()
	if more > 0 {
		errs = append(errs, errors.New("and "+strconv.Itoa(more)+" more errors"))
	}
	if ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

// Stats are the fleet's counts and its latency samples.
type Stats struct {
	Answered int64 // challenges answered
	// Failed are challenges refused (unknown address, bad challenge); in
	// push mode, pushes that failed (a challenge not fetched or refused,
	// evidence not answered with a verdict).
	Failed int64
	// Answer is the simulator's time from a challenge's handler start to
	// its evidence written (quote signing and encoding): what the node
	// costs, not the server's round trip.
	Answer Percentiles
	// Gap is the time between two challenges to the same node: the
	// effective re-attestation period.
	Gap Percentiles
	// RoundTrip, in push mode only, is a push from its challenge requested
	// to its verdict read: the server's part included.
	RoundTrip Percentiles
}

// Percentiles of a sample.
type Percentiles struct {
	N             int
	P50, P99, Max time.Duration
}

// Stats returns the counts and the percentiles of the samples so far.
func (f *Fleet) Stats() Stats { return f.Samples().Stats() }

// Samples are the fleet's counts and its latency samples (as Stats
// describes them), unsorted: those of fleets in several processes are
// merged before their percentiles are taken.
type Samples struct {
	Answered  int64           `json:"answered"`
	Failed    int64           `json:"failed"`
	Answer    []time.Duration `json:"answer_ns"`
	Gap       []time.Duration `json:"gap_ns"`
	RoundTrip []time.Duration `json:"round_trip_ns"`
}

// Samples returns a copy of the counts and the samples so far.
func (f *Fleet) Samples() Samples {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Samples{Answered: f.answered.Load(), Failed: f.failed.Load(), Answer: slices.Clone(f.answer), Gap: slices.Clone(f.gap), RoundTrip: slices.Clone(f.trip)}
}

// Add merges o's counts and samples into s.
func (s *Samples) Add(o Samples) {
	s.Answered += o.Answered
	s.Failed += o.Failed
	s.Answer = append(s.Answer, o.Answer...)
	s.Gap = append(s.Gap, o.Gap...)
	s.RoundTrip = append(s.RoundTrip, o.RoundTrip...)
}

// Stats returns the counts and the percentiles of s (sorting its samples).
func (s Samples) Stats() Stats {
	return Stats{Answered: s.Answered, Failed: s.Failed, Answer: PercentilesOf(s.Answer), Gap: PercentilesOf(s.Gap), RoundTrip: PercentilesOf(s.RoundTrip)}
}

// Answered returns how many challenges the fleet has answered.
func (f *Fleet) Answered() int64 { return f.answered.Load() }

// ResetSamples drops the latency samples (at the start of a measured
// window).
func (f *Fleet) ResetSamples() {
	f.mu.Lock()
	f.answer, f.gap, f.trip = nil, nil, nil
	f.mu.Unlock()
}

// PercentilesOf returns the percentiles of s, which it sorts.
func PercentilesOf(s []time.Duration) Percentiles {
	if len(s) == 0 {
		return Percentiles{}
	}
	slices.Sort(s)
	return Percentiles{N: len(s), P50: s[len(s)/2], P99: s[len(s)*99/100], Max: s[len(s)-1]}
}
