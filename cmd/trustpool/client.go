package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"trustpool/internal/api"
	"trustpool/internal/httpjson"
)

// apiFlags are how the operator's verbs reach a server: by default the one
// on this machine, with the CA and admin token from its state directory.
type apiFlags struct {
	server    string
	stateDir  string
	caFile    string
	tokenFile string
	out       *output // the root's --output
}

func (f *apiFlags) register(cmd *cobra.Command) {
	p := cmd.PersistentFlags()
	p.StringVar(&f.server, "server", "https://127.0.0.1:8443", "attestation server URL")
	stateDir := os.Getenv("TRUSTPOOL_STATE_DIR")
	if stateDir == "" {
		stateDir = "/var/lib/trustpool"
	}
	p.StringVar(&f.stateDir, "state-dir", stateDir, "server state directory holding ca.pem and admin.token (default $TRUSTPOOL_STATE_DIR)")
	p.StringVar(&f.caFile, "ca", "", "CA certificate to trust (default <state-dir>/ca.pem)")
	p.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token (default <state-dir>/admin.token; $TRUSTPOOL_TOKEN wins)")
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
	return &client{api.NewClient(f.server, pem, token)}, nil
}

// client is the API client the operator's verbs share.
type client struct{ *httpjson.Client }
