package api

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"time"

	"trustpool/internal/httpjson"
)

// NewHTTPClient returns a client that trusts only the CA in caPEM: how the
// CLI and the demo reach the server.
func NewHTTPClient(caPEM []byte) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
}

// NewClient returns a client of the API at base (https://host:port) with a
// bearer token, trusting only the server's CA. Answers may be up to 64 MiB
// (an audit log page, every host's verdict) and are decoded leniently: the
// operator's verbs read partial views of them.
func NewClient(base string, caPEM []byte, token string) *httpjson.Client {
	return &httpjson.Client{
		HTTP:               NewHTTPClient(caPEM),
		Base:               strings.TrimSuffix(base, "/"),
		Token:              token,
		MaxAnswer:          64 << 20,
		AllowUnknownFields: true,
	}
}
