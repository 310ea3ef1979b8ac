package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"
)

func TestCAPersistsAndIssues(t *testing.T) {
	dir := t.TempDir()
	now := time.Now
	ca, err := LoadOrCreateCA(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateCA(dir, now)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cert.Equal(ca.Cert) {
		t.Fatal("CA changed across loads")
	}
	srv, err := ca.LoadOrCreateServerCert(dir, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(srv.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "127.0.0.1"}); err != nil {
		t.Fatalf("server cert does not verify for 127.0.0.1: %v", err)
	}
	same, _ := ca.LoadOrCreateServerCert(dir, []string{"127.0.0.1"})
	if string(same.Certificate[0]) != string(srv.Certificate[0]) {
		t.Fatal("server cert reissued although it covers the names")
	}
	wider, _ := ca.LoadOrCreateServerCert(dir, []string{"127.0.0.1", "attest.example"})
	if string(wider.Certificate[0]) == string(srv.Certificate[0]) {
		t.Fatal("server cert not reissued for a new name")
	}
}

func TestAgentCertificateBindsHost(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := LoadOrCreateCA(t.TempDir(), time.Now)
	key, csr, err := NewKeyAndCSR("evil-claims-node2")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignAgentCSR(csr, "node1", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := EncodeKey(key)
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("issued cert does not match the CSR key: %v", err)
	}
	block, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(block.Bytes)
	chain := []*x509.Certificate{cert}
	tests := []struct {
		name string
		ca   *CA
		host string
		ok   bool
	}{
		{"enrolled host", ca, "node1", true},
		{"name from the CSR is ignored", ca, "evil-claims-node2", false},
		{"another host", ca, "node2", false},
		{"another CA", other, "node1", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.ca.VerifyHost(chain, tc.host, x509.ExtKeyUsageClientAuth)
			if (err == nil) != tc.ok {
				t.Fatalf("VerifyHost = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := ca.SignAgentCSR([]byte("not a csr"), "node1", ""); err == nil {
		t.Fatal("garbage CSR accepted")
	}
}
