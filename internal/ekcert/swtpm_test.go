package ekcert

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"trustpool/internal/agent/swtpm"
	"trustpool/internal/agent/swtpm/swtpmtest"
	"trustpool/internal/agent/tpm"
)

// eccEKHandle is where swtpm_setup makes the ECC (NIST P-384) EK persistent;
// its certificate is at NV 0x01c00016.
const eccEKHandle = tpm2.TPMHandle(0x81010016)

// vendor is a TPM manufactured by swtpm_setup with the EK certificates of
// swtpm_localca, a local two-level CA (a root and an issuing CA) standing in
// for a TPM vendor's.
type vendor struct {
	bundle     []byte // the local CA's root and issuing CA, PEM
	rootPEM    []byte
	issuerPEM  []byte
	ekPublic   []byte // RSA EK TPMT_PUBLIC, read from the running TPM
	ekCert     []byte // RSA EK certificate, read from NV 0x01c00002
	eccPublic  []byte // ECC EK TPMT_PUBLIC, read from the running TPM
	eccCert    []byte // ECC EK certificate, as swtpm_setup wrote it out
	ekCertFile []byte // RSA EK certificate, as swtpm_setup wrote it out
}

// manufacture runs `swtpm_setup --tpm2 --create-ek-cert
// --create-platform-cert` on a new TPM state in dir, with swtpm_localca
// configured by files written into dir, as a vendor's production line
// would. swtpm_localca creates its root and issuing CA in dir/ca on first
// use.
func manufacture(ctx context.Context, dir string) error {
	caDir, state, certs := filepath.Join(dir, "ca"), filepath.Join(dir, "tpm"), filepath.Join(dir, "certs")
	for _, d := range []string{caDir, state, certs} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	files := map[string]string{
		"swtpm-localca.conf":    fmt.Sprintf("statedir = %[1]s\nsigningkey = %[1]s/signkey.pem\nissuercert = %[1]s/issuercert.pem\ncertserial = %[1]s/certserial\n", caDir),
		"swtpm-localca.options": "--platform-manufacturer trustpool\n--platform-version 1.0\n--platform-model test\n",
		"swtpm_setup.conf": fmt.Sprintf("create_certs_tool = swtpm_localca\ncreate_certs_tool_config = %[1]s/swtpm-localca.conf\n"+
			"create_certs_tool_options = %[1]s/swtpm-localca.options\nactive_pcr_banks = sha256\n", dir),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "swtpm_setup", "--tpm2", "--create-ek-cert", "--create-platform-cert",
		"--tpmstate", state, "--config", filepath.Join(dir, "swtpm_setup.conf"), "--write-ek-cert-files", certs)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("swtpm_setup: %w\n%s", err, out)
	}
	return nil
}

// loadVendor reads what manufacture made in dir, starting swtpm on the
// TPM state to read the EKs and the RSA EK certificate as the agent does.
func loadVendor(t *testing.T, dir string) *vendor {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v := &vendor{
		rootPEM:    read("ca/swtpm-localca-rootca-cert.pem"),
		issuerPEM:  read("ca/issuercert.pem"),
		ekCertFile: read("certs/ek-rsa2048.crt"),
		eccCert:    read("certs/ek-secp384r1.crt"),
	}
	v.bundle = append(append([]byte(nil), v.rootPEM...), v.issuerPEM...)

	p := swtpmtest.Start(t, filepath.Join(dir, "tpm"))
	tp, err := tpm.Open(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	v.ekPublic, v.ekCert, err = tp.EK()
	if cerr := tp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("read EK: %v", err)
	}
	if v.ekCert == nil {
		t.Fatal("swtpm_setup wrote no EK certificate into NV")
	}
	// package tpm reads only the RSA EK; read the ECC one directly.
	conn, err := net.Dial("tcp", p.DataAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rsp, err := tpm2.ReadPublic{ObjectHandle: eccEKHandle}.Execute(rawTPM{conn})
	if err != nil {
		t.Fatalf("read ECC EK at 0x%x: %v", uint32(eccEKHandle), err)
	}
	v.eccPublic = rsp.OutPublic.Bytes()
	return v
}

// rawTPM sends TPM commands on swtpm's data channel, unframed.
type rawTPM struct{ conn net.Conn }

func (r rawTPM) Send(cmd []byte) ([]byte, error) {
	if err := r.conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return nil, err
	}
	if _, err := r.conn.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10) // tag, size, response code
	if _, err := io.ReadFull(r.conn, hdr); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < 10 || size > 1<<16 {
		return nil, fmt.Errorf("response of %d bytes", size)
	}
	rsp := append(hdr, make([]byte, size-10)...)
	if _, err := io.ReadFull(r.conn, rsp[10:]); err != nil {
		return nil, err
	}
	return rsp, nil
}

// TestSwtpmEKCerts verifies EK certificates that the real swtpm_setup and
// swtpm_localca made for two TPMs, each with its own local CA standing in
// for a vendor. Both CAs have the same names and differ only in keys.
func TestSwtpmEKCerts(t *testing.T) {
	for _, bin := range []string{"swtpm_setup", "swtpm_localca", "swtpm_cert", "certtool", swtpm.Binary} {
		swtpmtest.RequireBinary(t, bin)
	}
	dirs := []string{t.TempDir(), t.TempDir()}
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	for i, d := range dirs {
		wg.Go(func() { errs[i] = manufacture(t.Context(), d) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	a, b := loadVendor(t, dirs[0]), loadVendor(t, dirs[1])

	if !bytes.Equal(a.ekCert, a.ekCertFile) {
		t.Fatalf("EK certificate in NV (%d bytes) differs from swtpm_setup's copy (%d bytes)", len(a.ekCert), len(a.ekCertFile))
	}
	leaf, err := x509.ParseCertificate(a.ekCert)
	if err != nil {
		t.Fatal(err)
	}
	if u := leaf.UnhandledCriticalExtensions; len(u) != 1 || !isSAN(u[0]) {
		t.Fatalf("crypto/x509 leaves %v unhandled in swtpm's EK certificate, want only the SubjectAltName", u)
	}
	valid := leaf.NotBefore.Add(time.Hour)
	swtpmInfo := Info{Manufacturer: "id:00001014", Model: "swtpm", Version: "id:20191023"}

	// The real EK and SAN, re-issued by a Go test CA, with and without an
	// unknown critical extension.
	goCA := newRootCA(t, "test EK CA")
	reissue := func(critical bool) []byte {
		tmpl := *leaf
		tmpl.ExtraExtensions, tmpl.SignatureAlgorithm = nil, x509.UnknownSignatureAlgorithm
		for _, e := range leaf.Extensions {
			if isSAN(e.Id) {
				tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
			}
		}
		if critical {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidUnknownExt, Critical: true, Value: []byte{5, 0}})
		}
		return goCA.issue(t, &tmpl, leaf.PublicKey)
	}

	tests := []struct {
		name     string
		bundle   []byte
		cert     []byte
		ekPublic []byte
		now      time.Time
		wantErr  string // substring; empty for success
	}{
		{name: "valid RSA EK", bundle: a.bundle, cert: a.ekCert, ekPublic: a.ekPublic, now: valid},
		{name: "valid ECC P-384 EK", bundle: a.bundle, cert: a.eccCert, ekPublic: a.eccPublic, now: valid},
		{name: "other TPM, its own CA", bundle: b.bundle, cert: b.ekCert, ekPublic: b.ekPublic, now: valid},
		{name: "both CAs in the bundle", bundle: append(append([]byte(nil), b.bundle...), a.bundle...), cert: a.ekCert, ekPublic: a.ekPublic, now: valid},
		{name: "wrong CA bundle", bundle: b.bundle, cert: a.ekCert, ekPublic: a.ekPublic, now: valid, wantErr: "unknown authority"},
		{name: "issuing CA missing from the bundle", bundle: a.rootPEM, cert: a.ekCert, ekPublic: a.ekPublic, now: valid, wantErr: "unknown authority"},
		{name: "certificate of another TPM's EK", bundle: a.bundle, cert: a.ekCert, ekPublic: b.ekPublic, now: valid, wantErr: "another RSA key"},
		{name: "ECC certificate of another TPM's EK", bundle: a.bundle, cert: a.eccCert, ekPublic: b.eccPublic, now: valid, wantErr: "another ECC key"},
		{name: "RSA certificate, ECC EK", bundle: a.bundle, cert: a.ekCert, ekPublic: a.eccPublic, now: valid, wantErr: "the EK is an ECC key"},
		{name: "expired", bundle: a.bundle, cert: a.ekCert, ekPublic: a.ekPublic, now: leaf.NotAfter.Add(time.Second), wantErr: "expired"},
		{name: "not yet valid", bundle: a.bundle, cert: a.ekCert, ekPublic: a.ekPublic, now: leaf.NotBefore.Add(-time.Second), wantErr: "not yet valid"},
		{name: "re-issued by a test CA", bundle: goCA.pem(), cert: reissue(false), ekPublic: a.ekPublic, now: valid},
		{name: "re-issued with an unknown critical extension", bundle: goCA.pem(), cert: reissue(true), ekPublic: a.ekPublic, now: valid, wantErr: "unhandled critical extension"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.bundle)
			if err != nil {
				t.Fatal(err)
			}
			info, err := v.Verify(tc.cert, tc.ekPublic, tc.now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Verify = %+v, %v; want error containing %q", info, err, tc.wantErr)
				}
				t.Logf("Verify: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if info != swtpmInfo {
				t.Errorf("Verify = %+v, want %+v", info, swtpmInfo)
			}
		})
	}

	t.Run("issuing CA alone is no trust anchor", func(t *testing.T) {
		if _, err := NewVerifier(a.issuerPEM); err == nil {
			t.Fatal("NewVerifier accepted a bundle without a root")
		}
	})
}
