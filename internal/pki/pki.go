// Package pki is the attestation server's small certificate authority. It
// issues the server's TLS certificate and, at admission, each agent's
// certificate from a CSR, so that the private keys never leave their owners.
//
// Identity rules: an agent certificate names exactly the admitted host's
// canonical DNS name (never an IP address, never a name from the CSR); only
// the server's certificate carries the trustpool server usage (ServerUsage),
// which the CA never puts in an agent's, so no agent certificate can pass as
// the server; and the server accepts for a host only the one certificate it
// issued at the host's latest admission (VerifyAgent), so a re-admission or
// a deletion revokes the old one.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// File names inside a state directory.
const (
	CAFile        = "ca.pem"
	caKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	serverKeyFile = "server-key.pem"
)

// Validity periods. Agent certificates are short-lived relative to the CA and
// re-issued at every enrollment.
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	leafValidity   = 365 * 24 * time.Hour
	clockSkewGrace = 5 * time.Minute
)

// ServerPolicy is the certificate policy that marks the attestation
// server's certificate (an OID under the UUID arc 2.25, ITU-T X.667). The
// CA puts it in the server's certificate only; agents accept a server, and
// a challenger, only with it.
var ServerPolicy = mustOID("2.25.271398055209123580273620737704290498125")

func mustOID(s string) x509.OID {
	oid, err := x509.ParseOID(s)
	if err != nil {
		panic(err)
	}
	return oid
}

// IsServer reports whether cert carries ServerPolicy.
func IsServer(cert *x509.Certificate) bool {
	return slices.ContainsFunc(cert.Policies, ServerPolicy.Equal)
}

// CA signs server and agent certificates.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
	now     func() time.Time
}

// LoadOrCreateCA loads the CA from dir, creating it on first use.
func LoadOrCreateCA(dir string, now func() time.Time) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, caKeyFile)
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, os.ErrNotExist) {
		return createCA(certPath, keyPath, now)
	}
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("load CA: key is not a signer")
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: signer, now: now}, nil
}

func createCA(certPath, keyPath string, now func() time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA key: %w", err)
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "trustpool CA", Organization: []string{"trustpool"}},
		NotBefore:             t.Add(-clockSkewGrace),
		NotAfter:              t.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, _ := x509.ParseCertificate(der)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeKey(keyPath, key); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write CA certificate: %w", err)
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: key, now: now}, nil
}

// Pool is a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// LoadOrCreateServerCert loads the server certificate from dir, issuing a new
// one when there is none or when it does not cover every name in names (DNS
// names or IP addresses).
func (ca *CA) LoadOrCreateServerCert(dir string, names []string) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, ServerFile), filepath.Join(dir, serverKeyFile)
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil {
		if leaf, err := x509.ParseCertificate(pair.Certificate[0]); err == nil && covers(leaf, names) && ca.now().Before(leaf.NotAfter) && IsServer(leaf) {
			return pair, nil
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create server key: %w", err)
	}
	// The server also presents this certificate as a client when it
	// challenges agents, which accept only clients from this CA.
	der, err := ca.issue(key.Public(), "trustpool server", names, true)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writeKey(keyPath, key); err != nil {
		return tls.Certificate{}, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("write server certificate: %w", err)
	}
	return tls.LoadX509KeyPair(certPath, keyPath)
}

// SignAgentCSR issues the certificate of an admitted host from the agent's
// CSR. Only the CSR's public key (after its self-signature is checked) is
// used: the certificate names exactly host, a canonical DNS name, for the
// agent's own listener (server auth) and its calls to the server (client
// auth).
func (ca *CA) SignAgentCSR(csrDER []byte, host string) (certPEM []byte, err error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("parse CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("check CSR signature: %w", err)
	}
	der, err := ca.issue(csr.PublicKey, host, []string{host}, false)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// issue signs a certificate for names. Only the server's gets IP addresses
// (it may be dialled by one) and ServerPolicy.
func (ca *CA) issue(pub crypto.PublicKey, cn string, names []string, server bool) ([]byte, error) {
	t := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"trustpool"}},
		NotBefore:    t.Add(-clockSkewGrace),
		NotAfter:     t.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil && server {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	if server {
		tmpl.Policies = []x509.OID{ServerPolicy}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", cn, err)
	}
	return der, nil
}

// VerifyAgent checks that chain[0] is the certificate admitted for host:
// byte for byte the pinned one (PEM, as stored at admission), still valid
// from this CA for usage, naming exactly host and not the server. It is
// the identity check the server makes on an agent's connection,
// independent of the address it dialled; x509's own name matching is
// looser (case, IP addresses, wildcards) and is not used.
func (ca *CA) VerifyAgent(chain []*x509.Certificate, host string, pinned []byte, usage x509.ExtKeyUsage) error {
	if len(chain) == 0 {
		return errors.New("no certificate presented")
	}
	leaf := chain[0]
	block, _ := pem.Decode(pinned)
	if block == nil || !bytes.Equal(block.Bytes, leaf.Raw) {
		return fmt.Errorf("certificate is not the one admitted for %s (re-enrolled, deleted or never admitted)", host)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != host || len(leaf.IPAddresses) > 0 || IsServer(leaf) {
		return fmt.Errorf("certificate does not name exactly %s", host)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: ca.now(), KeyUsages: []x509.ExtKeyUsage{usage}})
	if err != nil {
		return fmt.Errorf("certificate is not the enrolled identity of %s: %w", host, err)
	}
	return nil
}

// RequireServer is the TLS check agents add to the standard chain and
// name verification, for the server they call and for whoever challenges
// them: the peer's certificate must carry ServerPolicy, so that no agent's
// certificate, issued by the same CA, passes as the server.
func RequireServer(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 || !IsServer(cs.PeerCertificates[0]) {
		return errors.New("peer certificate is not the attestation server's (no trustpool server policy)")
	}
	return nil
}

// NewKeyAndCSR makes an agent's TLS key and a CSR for it. The key stays on
// the node.
func NewKeyAndCSR(host string) (key *ecdsa.PrivateKey, csrDER []byte, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("create agent key: %w", err)
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: host}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create CSR: %w", err)
	}
	return key, csrDER, nil
}

// EncodeKey returns key as a PEM block.
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	b, err := EncodeKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

func covers(c *x509.Certificate, names []string) bool {
	for _, n := range names {
		if c.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // the OS has no randomness: nothing is safe
	}
	return n
}
