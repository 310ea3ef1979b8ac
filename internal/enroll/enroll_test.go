package enroll_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"trustpool/internal/agent/tpm"
	"trustpool/internal/enroll"
	"trustpool/internal/evidence"
	"trustpool/internal/pki"
	"trustpool/internal/problem"
	"trustpool/internal/store"
	"trustpool/internal/verify/verifytest"
)

type fixture struct {
	svc   *enroll.Service
	cfg   enroll.Config
	store *store.Store
	tpm   *tpm.TPM
	ek    []byte
	ak    []byte
	now   time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	tp, err := tpm.Open(tpm.SimulatorAddr)
	if errors.Is(err, tpm.ErrNoSimulator) && os.Getenv("CI") != "true" {
		t.Skip("built without cgo: no TPM simulator")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	dir := t.TempDir()
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(dir, "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now().UTC()
	ca, err := pki.LoadOrCreateCA(dir, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	ek, _, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tp.AK()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: st, tpm: tp, ek: ek, ak: ak, now: now}
	f.cfg = enroll.Config{Store: st, CA: ca, Now: func() time.Time { return f.now }, Reserved: []string{"attest.example.com", "127.0.0.1"}}
	f.svc = enroll.New(f.cfg)
	return f
}

func (f *fixture) token(t *testing.T, host string, expires time.Time) string {
	t.Helper()
	tok := enroll.NewToken()
	if err := f.store.CreateJoinToken(context.Background(), store.JoinToken{Hash: enroll.TokenHash(tok), Host: host, ExpiresAt: expires, CreatedAt: f.now}); err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fixture) request(t *testing.T, host, token string) *evidence.EnrollRequest {
	t.Helper()
	_, csr, err := pki.NewKeyAndCSR(host)
	if err != nil {
		t.Fatal(err)
	}
	return &evidence.EnrollRequest{Host: host, EKPublic: f.ek, AKPublic: f.ak, URL: "https://127.0.0.1:9443", CSR: csr, JoinToken: token}
}

// run enrolls with the TPM doing the activation.
func (f *fixture) run(t *testing.T, req *evidence.EnrollRequest) (*evidence.Admitted, error) {
	t.Helper()
	ctx := context.Background()
	cred, err := f.svc.Begin(ctx, req, "192.0.2.7")
	if err != nil {
		return nil, err
	}
	secret, err := f.tpm.ActivateCredential(cred.CredentialBlob, cred.EncryptedSecret)
	if err != nil {
		return nil, err
	}
	return f.svc.Activate(ctx, &evidence.EnrollActivation{ID: cred.ID, Secret: secret})
}

func wantKind(t *testing.T, err error, k problem.Kind) {
	t.Helper()
	if problem.KindOf(err) != k {
		t.Fatalf("error %v: kind %d, want %d", err, problem.KindOf(err), k)
	}
}

func TestEnrollment(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	t.Run("activation with a wrong secret is refused and nothing is stored", func(t *testing.T) {
		cred, err := f.svc.Begin(ctx, f.request(t, "node1", ""), "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Activate(ctx, &evidence.EnrollActivation{ID: cred.ID, Secret: make([]byte, 32)})
		wantKind(t, err, problem.Forbidden)
		if _, err := f.store.GetHost(ctx, "node1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("host stored after a failed activation: %v", err)
		}
		_, err = f.svc.Activate(ctx, &evidence.EnrollActivation{ID: cred.ID, Secret: make([]byte, 32)})
		wantKind(t, err, problem.NotFound) // one try per enrollment
	})
	t.Run("an AK that is not in this TPM cannot activate", func(t *testing.T) {
		soft, err := verifytest.NewSoftAK(verifytest.RSA2048)
		if err != nil {
			t.Fatal(err)
		}
		req := f.request(t, "node1", "")
		req.AKPublic = soft.Public()
		if _, err := f.run(t, req); err == nil {
			t.Fatal("the TPM activated a credential bound to a foreign AK")
		}
	})
	t.Run("a key that is not a restricted signing key is refused", func(t *testing.T) {
		req := f.request(t, "node1", "")
		req.AKPublic = f.ek // a decryption key
		_, err := f.svc.Begin(ctx, req, "")
		wantKind(t, err, problem.Invalid)
	})
	t.Run("expired join token", func(t *testing.T) {
		_, err := f.run(t, f.request(t, "node1", f.token(t, "node1", f.now.Add(-time.Minute))))
		wantKind(t, err, problem.Forbidden)
	})
	t.Run("join token of another host", func(t *testing.T) {
		_, err := f.run(t, f.request(t, "node1", f.token(t, "node9", f.now.Add(time.Hour))))
		wantKind(t, err, problem.Forbidden)
	})
	tok := f.token(t, "node1", f.now.Add(time.Hour))
	t.Run("join token admits the host", func(t *testing.T) {
		adm, err := f.run(t, f.request(t, "node1", tok))
		if err != nil {
			t.Fatal(err)
		}
		h, err := f.store.GetHost(ctx, "node1")
		if err != nil || adm.State != evidence.EnrollAdmitted || h.State != store.HostActive || string(h.AKPublic) != string(f.ak) || len(adm.Cert) == 0 {
			t.Fatalf("admitted %+v, stored %+v, %v", adm, h, err)
		}
	})
	t.Run("join token used twice", func(t *testing.T) {
		_, err := f.run(t, f.request(t, "node1", tok))
		wantKind(t, err, problem.Forbidden)
	})
	t.Run("an EK bound to one host cannot enroll as another", func(t *testing.T) {
		_, err := f.svc.Begin(ctx, f.request(t, "node2", f.token(t, "node2", f.now.Add(time.Hour))), "")
		wantKind(t, err, problem.Conflict)
	})
	t.Run("malformed requests", func(t *testing.T) {
		for name, mutate := range map[string]func(r *evidence.EnrollRequest){
			"bad host name": func(r *evidence.EnrollRequest) { r.Host = "node 1; rm -rf" },
			"http url":      func(r *evidence.EnrollRequest) { r.URL = "http://127.0.0.1:9443" },
			"no csr":        func(r *evidence.EnrollRequest) { r.CSR = nil },
			"garbage EK":    func(r *evidence.EnrollRequest) { r.EKPublic = []byte{1, 2, 3} },
			"bad token":     func(r *evidence.EnrollRequest) { r.JoinToken = "short" },
			"IP address":    func(r *evidence.EnrollRequest) { r.Host = "10.0.0.17" },
			"trailing dot":  func(r *evidence.EnrollRequest) { r.Host = "node1." },
			"underscore":    func(r *evidence.EnrollRequest) { r.Host = "node_1" },
			"long label":    func(r *evidence.EnrollRequest) { r.Host = strings.Repeat("a", 64) + ".example" },
		} {
			req := f.request(t, "node1", "")
			mutate(req)
			_, err := f.svc.Begin(ctx, req, "")
			if problem.KindOf(err) != problem.Invalid {
				t.Errorf("%s: %v, want invalid", name, err)
			}
		}
	})
}

// A TPM without a join token proves itself by activation and then waits:
// no certificate, no host, nothing but a secret to poll with, until an
// operator approves exactly its EK.
func TestPendingUntilApproved(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	adm, err := f.run(t, f.request(t, "node1", ""))
	if err != nil {
		t.Fatal(err)
	}
	if adm.State != evidence.EnrollPending || len(adm.Cert) != 0 || adm.Poll == "" {
		t.Fatalf("activation without a token: %+v, want pending with a poll secret and no certificate", adm)
	}
	if _, err := f.store.GetHost(ctx, "node1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a pending TPM owns a host: %v", err)
	}
	if got, err := f.svc.Poll(ctx, &evidence.EnrollPoll{Poll: adm.Poll}); err != nil || got.State != evidence.EnrollPending || len(got.Cert) != 0 {
		t.Fatalf("poll before approval: %+v %v", got, err)
	}
	ps, err := f.svc.Pending(ctx)
	if err != nil || len(ps) != 1 {
		t.Fatalf("pending list: %+v %v", ps, err)
	}
	p := ps[0]
	if p.Host != "node1" || p.EKFingerprint != hex.EncodeToString(store.EKHash(f.ek)) || p.Source != "192.0.2.7" || p.AKName == "" {
		t.Fatalf("pending view %+v does not say which TPM waits", p)
	}
	other := strings.Repeat("ab", 32)
	if _, err := f.svc.Approve(ctx, "node1", other, "admin"); problem.KindOf(err) != problem.NotFound {
		t.Fatalf("approving another EK under node1: %v, want not found", err)
	}
	if _, err := f.svc.Approve(ctx, "NODE1", p.EKFingerprint, "admin"); err != nil {
		t.Fatal(err)
	}
	// The approval is audited in the admission's own transaction.
	es, err := f.store.ListAudit(ctx, 0, 10)
	if err != nil || len(es) != 1 || es[0].Action != "host.approve" || es[0].Actor != "admin" || !strings.Contains(string(es[0].Detail), p.EKFingerprint) {
		t.Fatalf("audit after the approval: %+v %v, want one host.approve by admin naming the EK", es, err)
	}
	got, err := f.svc.Poll(ctx, &evidence.EnrollPoll{Poll: adm.Poll})
	if err != nil || got.State != evidence.EnrollAdmitted || len(got.Cert) == 0 {
		t.Fatalf("poll after approval: %+v %v", got, err)
	}
	h, err := f.store.GetHost(ctx, "node1")
	if err != nil || h.State != store.HostActive || string(h.AgentCert) != string(got.Cert) {
		t.Fatalf("approved host %+v %v: want active with the certificate handed out", h, err)
	}
	if _, err := f.svc.Poll(ctx, &evidence.EnrollPoll{Poll: adm.Poll}); problem.KindOf(err) != problem.NotFound {
		t.Fatalf("second poll after approval: %v, want not found (the certificate is handed out once)", err)
	}
	// The same TPM enrolling again under its name is re-admitted at once,
	// with a new certificate that replaces the pinned one.
	again, err := f.run(t, f.request(t, "node1", ""))
	if err != nil || again.State != evidence.EnrollAdmitted || string(again.Cert) == string(got.Cert) {
		t.Fatalf("re-enrollment of the admitted TPM: %+v %v", again, err)
	}
	if h, _ := f.store.GetHost(ctx, "node1"); string(h.AgentCert) != string(again.Cert) {
		t.Fatal("re-enrollment did not replace the pinned certificate")
	}
}

// Agent certificates name exactly the canonical host name: no IP address
// from the agent's URL, no server policy.
func TestAgentCertificateNamesOnlyTheHost(t *testing.T) {
	f := newFixture(t)
	req := f.request(t, "Node1.Example.COM", f.token(t, "node1.example.com", f.now.Add(time.Hour)))
	req.URL = "https://10.0.0.17:9443"
	adm, err := f.run(t, req)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(adm.Cert)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cert.DNSNames, []string{"node1.example.com"}) || len(cert.IPAddresses) != 0 || pki.IsServer(cert) {
		t.Fatalf("agent certificate names %v and %v (server policy %v), want exactly node1.example.com", cert.DNSNames, cert.IPAddresses, pki.IsServer(cert))
	}
}

func TestReservedNames(t *testing.T) {
	f := newFixture(t)
	for _, name := range []string{"attest.example.com", "ATTEST.example.com"} {
		if _, err := f.svc.Begin(context.Background(), f.request(t, name, ""), ""); problem.KindOf(err) != problem.Forbidden {
			t.Errorf("enrolling as the server's name %s: %v, want forbidden", name, err)
		}
	}
}

// Waiting requests are capped and swept: a flood without tokens gets 429
// and leaves nothing behind once expired; a join token still gets through.
func TestWaitingCapAndSweep(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	cfg := f.cfg
	cfg.MaxWaiting, cfg.PendingTTL = 2, time.Hour
	f.svc = enroll.New(cfg)
	if _, err := f.run(t, f.request(t, "node1", "")); err != nil { // pending
		t.Fatal(err)
	}
	if _, err := f.svc.Begin(ctx, f.request(t, "node2", ""), ""); err != nil { // in flight
		t.Fatal(err)
	}
	_, err := f.svc.Begin(ctx, f.request(t, "node3", ""), "")
	wantKind(t, err, problem.TooMany)
	if _, err := f.svc.Begin(ctx, f.request(t, "node1", f.token(t, "node1", f.now.Add(2*time.Hour))), ""); err != nil {
		t.Fatalf("a token-backed request past the cap: %v", err)
	}
	f.now = f.now.Add(time.Hour + time.Second)
	f.svc.Sweep(ctx)
	if n, err := f.store.CountWaiting(ctx, time.Time{}); err != nil || n != 0 {
		t.Fatalf("after the sweep %d rows wait (%v), want 0", n, err)
	}
}

// With EKCertAdmits, an EK certificate that the vendor check accepts admits
// the TPM without a token; one it refuses is refused (403), and without the
// option a valid certificate alone only makes the TPM wait.
func TestEKCertificateAdmits(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](f.ek)
	if err != nil {
		t.Fatal(err)
	}
	parms, _ := pub.Parameters.RSADetail()
	n, _ := pub.Unique.RSA()
	ekKey, err := tpm2.RSAPub(parms, n)
	if err != nil {
		t.Fatal(err)
	}
	vendor, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), NotBefore: f.now.Add(-time.Hour), NotAfter: f.now.Add(time.Hour),
		KeyUsage: x509.KeyUsageKeyEncipherment}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ekKey, vendor)
	if err != nil {
		t.Fatal(err)
	}
	accept := true
	cfg := f.cfg
	cfg.EKCheck = func(cert, ek []byte, _ time.Time) error {
		if !accept {
			return errors.New("not from a vendor in the bundle")
		}
		return nil
	}
	withCert := func() *evidence.EnrollRequest {
		r := f.request(t, "node1", "")
		r.EKCert = certDER
		return r
	}
	f.svc = enroll.New(cfg) // checks EK certificates, does not admit by them
	if adm, err := f.run(t, withCert()); err != nil || adm.State != evidence.EnrollPending {
		t.Fatalf("a valid EK certificate without EKCertAdmits: %+v %v, want pending", adm, err)
	}
	cfg.EKCertAdmits = true
	f.svc = enroll.New(cfg)
	adm, err := f.run(t, withCert())
	if err != nil || adm.State != evidence.EnrollAdmitted || len(adm.Cert) == 0 {
		t.Fatalf("a valid EK certificate with EKCertAdmits: %+v %v, want admitted", adm, err)
	}
	if h, err := f.store.GetHost(ctx, "node1"); err != nil || h.State != store.HostActive {
		t.Fatalf("host after admission by EK certificate: %+v %v", h, err)
	}
	accept = false
	_, err = f.svc.Begin(ctx, withCert(), "")
	wantKind(t, err, problem.Forbidden)
}
