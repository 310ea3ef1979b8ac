package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"trustpool/internal/integrity"
	"trustpool/internal/notify"
	"trustpool/internal/nova"
	"trustpool/internal/server"
)

func serverCmd() *cobra.Command {
	var (
		cfg       server.Config
		interval  time.Duration
		validity  time.Duration
		timeout   time.Duration
		ekBundle  string
		ekCRLs    []string
		placement nova.TraitSyncConfig
		keystone  nova.KeystoneAuth
		ksPassEnv string
		webhooks  []string
		whSecret  string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the attestation server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
			cfg.Integrity = integrity.Config{Interval: interval, Validity: validity, Timeout: timeout}
			var errs []error
			if ekBundle != "" {
				b, err := os.ReadFile(ekBundle)
				errs = append(errs, err)
				cfg.EKCABundle = b
			}
			for _, path := range ekCRLs {
				b, err := os.ReadFile(path)
				errs = append(errs, err)
				cfg.EKCRLs = append(cfg.EKCRLs, b)
			}
			if placement.Endpoint != "" || keystone.AuthURL != "" {
				if keystone.AuthURL != "" {
					keystone.Password = os.Getenv(ksPassEnv)
					if keystone.Password == "" {
						errs = append(errs, fmt.Errorf("--keystone-password-env: $%s is empty", ksPassEnv))
					}
					placement.Keystone = &keystone
				}
				cfg.Placement = &placement
			}
			if len(webhooks) > 0 {
				wc := &notify.Config{Targets: webhooks}
				if whSecret != "" {
					if wc.Secret = []byte(os.Getenv(whSecret)); len(wc.Secret) == 0 {
						errs = append(errs, fmt.Errorf("--webhook-secret-env: $%s is empty", whSecret))
					}
				}
				cfg.Webhooks = wc
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
			s, err := server.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			cfg.Log.Info("attestation server listening", "url", s.URL(), "state", cfg.StateDir)
			return s.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/trustpool", "directory for the CA, certificates, credentials and the SQLite store")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8443", "address to serve HTTPS on")
	f.StringSliceVar(&cfg.Names, "name", nil, "extra DNS name or IP for the server certificate (repeatable)")
	f.StringVar(&cfg.DSN, "db", "", "store: sqlite:/path or a postgres:// URL (default SQLite in the state directory)")
	f.DurationVar(&interval, "interval", 30*time.Second, "re-attestation interval (keep it below Nova's attestation_auth_timeout)")
	f.DurationVar(&validity, "validity", 0, "how long a verdict stands (default 3 × interval)")
	f.DurationVar(&timeout, "challenge-timeout", 10*time.Second, "deadline for one challenge round trip")
	f.Float64Var(&cfg.EnrollPerMinute, "enroll-rate", 60, "enrollment requests allowed per client address per minute")
	f.StringVar(&ekBundle, "ek-ca-bundle", "", "PEM bundle of TPM vendor CAs: EK certificates agents present must chain to one")
	f.BoolVar(&cfg.RequireEKCert, "require-ek-cert", false, "admit only TPMs with a valid EK certificate (needs --ek-ca-bundle)")
	f.BoolVar(&cfg.EKCertAdmits, "admit-by-ek-cert", false, "a valid EK certificate admits a TPM without a join token or approval (needs --ek-ca-bundle)")
	f.StringArrayVar(&ekCRLs, "ek-crl", nil, "TPM vendor CRL file (DER or PEM), checked at enrollment (repeatable; needs --ek-ca-bundle)")
	f.StringVar(&cfg.Replica, "replica", "", "this replica's name among those sharing a PostgreSQL database (default host name, PID and a random suffix)")
	f.DurationVar(&cfg.LeaseTime, "lease-time", 30*time.Second, "replicas on PostgreSQL: how long a replica's leases on hosts last; a dead replica's hosts are taken over within it")
	f.BoolVar(&cfg.AllowIPNames, "allow-ip-names", false, "let hosts be named by IP address (by default only DNS names)")
	f.StringVar(&placement.Endpoint, "placement-url", "", "OpenStack Placement endpoint: keep a trait on trusted hosts' resource providers")
	f.StringVar(&placement.Token, "placement-token", "", "static Placement token (noauth2 deployments)")
	f.StringVar(&placement.Trait, "placement-trait", nova.DefaultTrait, "the custom trait trusted hosts carry")
	f.DurationVar(&placement.Interval, "placement-interval", nova.DefaultInterval, "full reconcile interval (drift repair)")
	f.StringVar(&keystone.AuthURL, "keystone-auth-url", "", "Keystone v3 URL for Placement credentials")
	f.StringVar(&keystone.Username, "keystone-username", "", "Keystone user allowed to write traits")
	f.StringVar(&ksPassEnv, "keystone-password-env", "KEYSTONE_PASSWORD", "environment variable holding the Keystone password")
	f.StringVar(&keystone.Project, "keystone-project", "", "project the Keystone token is scoped to")
	f.StringVar(&keystone.UserDomain, "keystone-user-domain", "Default", "Keystone user domain")
	f.StringVar(&keystone.ProjectDomain, "keystone-project-domain", "Default", "Keystone project domain")
	f.StringVar(&keystone.Region, "keystone-region", "", "service catalog region")
	f.StringVar(&keystone.Interface, "keystone-interface", "public", "service catalog interface: public, internal or admin")
	f.StringArrayVar(&webhooks, "webhook", nil, "URL that receives every verdict transition (repeatable)")
	f.StringVar(&whSecret, "webhook-secret-env", "", "environment variable holding the webhooks' HMAC key")
	return cmd
}
