package enroll_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"trustpool/internal/agent/tpm"
	"trustpool/internal/enroll"
	"trustpool/internal/pki"
	"trustpool/internal/problem"
	"trustpool/internal/store"
	"trustpool/internal/verify/verifytest"
)

type fixture struct {
	svc   *enroll.Service
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
	return &fixture{svc: enroll.New(st, ca, func() time.Time { return now }), store: st, tpm: tp, ek: ek, ak: ak, now: now}
}

func (f *fixture) token(t *testing.T, host string, expires time.Time) string {
	t.Helper()
	tok := enroll.NewToken()
	if err := f.store.CreateJoinToken(context.Background(), store.JoinToken{Hash: enroll.TokenHash(tok), Host: host, ExpiresAt: expires, CreatedAt: f.now}); err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fixture) request(t *testing.T, host, token string) *enroll.Request {
	t.Helper()
	_, csr, err := pki.NewKeyAndCSR(host)
	if err != nil {
		t.Fatal(err)
	}
	return &enroll.Request{Host: host, EKPublic: f.ek, AKPublic: f.ak, URL: "https://127.0.0.1:9443", CSR: csr, JoinToken: token}
}

// run enrolls with the TPM doing the activation.
func (f *fixture) run(t *testing.T, req *enroll.Request) (*enroll.Admitted, error) {
	t.Helper()
	ctx := context.Background()
	cred, err := f.svc.Begin(ctx, req)
	if err != nil {
		return nil, err
	}
	secret, err := f.tpm.ActivateCredential(cred.CredentialBlob, cred.EncryptedSecret)
	if err != nil {
		return nil, err
	}
	return f.svc.Activate(ctx, &enroll.Activation{ID: cred.ID, Secret: secret})
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
		cred, err := f.svc.Begin(ctx, f.request(t, "node1", ""))
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Activate(ctx, &enroll.Activation{ID: cred.ID, Secret: make([]byte, 32)})
		wantKind(t, err, problem.Forbidden)
		if _, err := f.store.GetHost(ctx, "node1"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("host stored after a failed activation: %v", err)
		}
		_, err = f.svc.Activate(ctx, &enroll.Activation{ID: cred.ID, Secret: make([]byte, 32)})
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
		_, err := f.svc.Begin(ctx, req)
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
		if err != nil || adm.State != string(store.HostActive) || h.State != store.HostActive || string(h.AKPublic) != string(f.ak) || len(adm.Cert) == 0 {
			t.Fatalf("admitted %+v, stored %+v, %v", adm, h, err)
		}
	})
	t.Run("join token used twice", func(t *testing.T) {
		_, err := f.run(t, f.request(t, "node1", tok))
		wantKind(t, err, problem.Forbidden)
	})
	t.Run("an EK bound to one host cannot enroll as another", func(t *testing.T) {
		_, err := f.svc.Begin(ctx, f.request(t, "node2", f.token(t, "node2", f.now.Add(time.Hour))))
		wantKind(t, err, problem.Conflict)
	})
	t.Run("malformed requests", func(t *testing.T) {
		for name, mutate := range map[string]func(r *enroll.Request){
			"bad host name": func(r *enroll.Request) { r.Host = "node 1; rm -rf" },
			"http url":      func(r *enroll.Request) { r.URL = "http://127.0.0.1:9443" },
			"no csr":        func(r *enroll.Request) { r.CSR = nil },
			"garbage EK":    func(r *enroll.Request) { r.EKPublic = []byte{1, 2, 3} },
			"bad token":     func(r *enroll.Request) { r.JoinToken = "short" },
		} {
			req := f.request(t, "node1", "")
			mutate(req)
			_, err := f.svc.Begin(ctx, req)
			if problem.KindOf(err) != problem.Invalid {
				t.Errorf("%s: %v, want invalid", name, err)
			}
		}
	})
}

func TestEnrollWithoutTokenIsPending(t *testing.T) {
	f := newFixture(t)
	adm, err := f.run(t, f.request(t, "node1", ""))
	if err != nil {
		t.Fatal(err)
	}
	if adm.State != string(store.HostPending) {
		t.Fatalf("state %s, want pending until an operator approves", adm.State)
	}
}
