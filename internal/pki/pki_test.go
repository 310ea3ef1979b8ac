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
	certPEM, err := ca.SignAgentCSR(csr, "node1")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := EncodeKey(key)
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("issued cert does not match the CSR key: %v", err)
	}
	block, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(block.Bytes)
	if len(cert.IPAddresses) != 0 || IsServer(cert) {
		t.Fatalf("agent certificate has IP addresses %v or the server policy", cert.IPAddresses)
	}
	_, csr2, _ := NewKeyAndCSR("node1")
	reissued, _ := ca.SignAgentCSR(csr2, "node1")
	upper, _ := ca.SignAgentCSR(csr2, "NODE1")
	upperBlock, _ := pem.Decode(upper)
	upperCert, _ := x509.ParseCertificate(upperBlock.Bytes)
	chain := []*x509.Certificate{cert}
	tests := []struct {
		name   string
		ca     *CA
		chain  []*x509.Certificate
		host   string
		pinned []byte
		ok     bool
	}{
		{"admitted host", ca, chain, "node1", certPEM, true},
		{"name from the CSR is ignored", ca, chain, "evil-claims-node2", certPEM, false},
		{"another host", ca, chain, "node2", certPEM, false},
		{"another CA", other, chain, "node1", certPEM, false},
		{"a certificate replaced by a re-admission", ca, chain, "node1", reissued, false},
		{"no pinned certificate (deleted)", ca, chain, "node1", nil, false},
		{"another spelling of the name", ca, []*x509.Certificate{upperCert}, "node1", upper, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.ca.VerifyAgent(tc.chain, tc.host, tc.pinned, x509.ExtKeyUsageClientAuth)
			if (err == nil) != tc.ok {
				t.Fatalf("VerifyAgent = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := ca.SignAgentCSR([]byte("not a csr"), "node1"); err == nil {
		t.Fatal("garbage CSR accepted")
	}
}

// Only the server's certificate carries the server policy, so an agent's
// certificate from the same CA fails RequireServer.
func TestOnlyTheServerIsTheServer(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.LoadOrCreateServerCert(dir, []string{"127.0.0.1", "attest.example"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(srv.Certificate[0])
	if err := RequireServer(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}); err != nil {
		t.Fatalf("the server's certificate: %v", err)
	}
	_, csr, _ := NewKeyAndCSR("attest.example")
	agentPEM, _ := ca.SignAgentCSR(csr, "attest.example")
	block, _ := pem.Decode(agentPEM)
	agent, _ := x509.ParseCertificate(block.Bytes)
	if err := RequireServer(tls.ConnectionState{PeerCertificates: []*x509.Certificate{agent}}); err == nil {
		t.Fatal("an agent's certificate passes as the server")
	}
}
