package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"trustpool/internal/api"
)

// apiFlags are how the operator's verbs reach a server: by default the one
// on this machine, with the CA and admin token from its state directory.
type apiFlags struct {
	server    string
	stateDir  string
	caFile    string
	tokenFile string
	json      bool
}

func (f *apiFlags) register(cmd *cobra.Command) {
	p := cmd.PersistentFlags()
	p.StringVar(&f.server, "server", "https://127.0.0.1:8443", "attestation server URL")
	p.StringVar(&f.stateDir, "state-dir", "/var/lib/trustpool", "server state directory holding ca.pem and admin.token")
	p.StringVar(&f.caFile, "ca", "", "CA certificate to trust (default <state-dir>/ca.pem)")
	p.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token (default <state-dir>/admin.token; $TRUSTPOOL_TOKEN wins)")
	p.BoolVar(&f.json, "json", false, "print JSON instead of a table")
}

// client is an API client for the operator's verbs.
type client struct {
	base  string
	token string
	http  *http.Client
}

func (f *apiFlags) client() (*client, error) {
	ca := f.caFile
	if ca == "" {
		ca = filepath.Join(f.stateDir, "ca.pem")
	}
	pem, err := os.ReadFile(ca)
	if err != nil {
		return nil, fmt.Errorf("server CA: %w", err)
	}
	token := os.Getenv("TRUSTPOOL_TOKEN")
	if token == "" {
		tf := f.tokenFile
		if tf == "" {
			tf = filepath.Join(f.stateDir, "admin.token")
		}
		b, err := os.ReadFile(tf)
		if err != nil {
			return nil, fmt.Errorf("token: %w (set $TRUSTPOOL_TOKEN or --token-file)", err)
		}
		token = strings.TrimSpace(string(b))
	}
	return &client{base: strings.TrimSuffix(f.server, "/"), token: token, http: api.NewHTTPClient(pem)}, nil
}

// do sends in as JSON (when not nil) and decodes the answer into out (when
// not nil). A non-2xx answer is an error carrying the server's message.
func (c *client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %s", method, path, e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

// printJSON writes v indented.
func printJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}
