package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"trustpool/internal/config"
	"trustpool/internal/integrity"
	"trustpool/internal/kube"
	"trustpool/internal/notify"
	"trustpool/internal/nova"
	"trustpool/internal/server"
)

// serverFlagOnly are the server's flags with no key in the config file.
var serverFlagOnly = []string{"config", "placement-token"}

func serverCmd() *cobra.Command { return serverCommand(runServer) }

// serverCommand returns the server command; run gets the merged
// configuration and the server's configuration built from it.
func serverCommand(run func(cmd *cobra.Command, c config.Server, cfg server.Config) error) *cobra.Command {
	var (
		fl        = config.DefaultServer()
		cfgFile   string
		placToken string
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the attestation server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := mergeServer(cmd, cfgFile, &fl)
			cfg, err2 := serverConfig(c, placToken)
			if err := errors.Join(err, err2); err != nil {
				return err
			}
			return run(cmd, c, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "TOML configuration file (`trustpool config example server`); flags given win over it")
	f.StringVar(&fl.StateDir, "state-dir", fl.StateDir, "directory for the CA, certificates, credentials and the SQLite store")
	f.StringVar(&fl.Listen, "listen", fl.Listen, "address to serve HTTPS on")
	f.StringSliceVar(&fl.Names, "name", nil, "extra DNS name or IP for the server certificate (repeatable)")
	f.StringVar(&fl.DB, "db", "", "store: sqlite:/path or a postgres:// URL (default SQLite in the state directory)")
	f.DurationVar(&fl.Interval, "interval", fl.Interval, "re-attestation interval (keep it below Nova's attestation_auth_timeout)")
	f.DurationVar(&fl.Validity, "validity", 0, "how long a verdict stands (default 3 × interval)")
	f.DurationVar(&fl.ChallengeTimeout, "challenge-timeout", fl.ChallengeTimeout, "deadline for one challenge round trip")
	f.IntVar(&fl.AgentConns, "agent-conns", fl.AgentConns, "agent connections kept open between challenges (each spares a TLS handshake a challenge, holds ~25 KB): 0 the default 256, -1 none; none at an interval of 90s or more")
	f.Float64Var(&fl.EnrollRate, "enroll-rate", fl.EnrollRate, "enrollment requests allowed per client address per minute")
	f.StringVar(&fl.EKCABundle, "ek-ca-bundle", "", "PEM bundle of TPM vendor CAs: EK certificates agents present must chain to one")
	f.BoolVar(&fl.RequireEKCert, "require-ek-cert", false, "admit only TPMs with a valid EK certificate (needs --ek-ca-bundle)")
	f.BoolVar(&fl.AdmitByEKCert, "admit-by-ek-cert", false, "a valid EK certificate admits a TPM without a join token or approval (needs --ek-ca-bundle)")
	f.StringArrayVar(&fl.EKCRLs, "ek-crl", nil, "TPM vendor CRL file (DER or PEM), checked at enrollment (repeatable; needs --ek-ca-bundle)")
	f.StringVar(&fl.Replica, "replica", "", "this replica's name among those sharing a PostgreSQL database (default host name, PID and a random suffix)")
	f.DurationVar(&fl.LeaseTime, "lease-time", fl.LeaseTime, "replicas on PostgreSQL: how long a replica's leases on hosts last; a dead replica's hosts are taken over within it")
	f.BoolVar(&fl.AllowIPNames, "allow-ip-names", false, "let hosts be named by IP address (by default only DNS names)")
	f.StringVar(&fl.PlacementURL, "placement-url", "", "OpenStack Placement endpoint: keep a trait on trusted hosts' resource providers")
	f.StringVar(&placToken, "placement-token", "", "static Placement token (noauth2 deployments)")
	f.StringVar(&fl.PlacementTokenEnv, "placement-token-env", "", "environment variable holding a static Placement token (instead of --placement-token)")
	f.StringVar(&fl.PlacementTrait, "placement-trait", nova.DefaultTrait, "the custom trait trusted hosts carry")
	f.DurationVar(&fl.PlacementInterval, "placement-interval", nova.DefaultInterval, "full reconcile interval (drift repair)")
	f.StringVar(&fl.KeystoneAuthURL, "keystone-auth-url", "", "Keystone v3 URL for Placement credentials")
	f.StringVar(&fl.KeystoneUsername, "keystone-username", "", "Keystone user allowed to write traits")
	f.StringVar(&fl.KeystonePasswordEnv, "keystone-password-env", fl.KeystonePasswordEnv, "environment variable holding the Keystone password")
	f.StringVar(&fl.KeystoneProject, "keystone-project", "", "project the Keystone token is scoped to")
	f.StringVar(&fl.KeystoneUserDomain, "keystone-user-domain", fl.KeystoneUserDomain, "Keystone user domain")
	f.StringVar(&fl.KeystoneProjectDomain, "keystone-project-domain", fl.KeystoneProjectDomain, "Keystone project domain")
	f.StringVar(&fl.KeystoneRegion, "keystone-region", "", "service catalog region")
	f.StringVar(&fl.KeystoneInterface, "keystone-interface", fl.KeystoneInterface, "service catalog interface: public, internal or admin")
	f.StringArrayVar(&fl.Webhooks, "webhook", nil, "URL that receives every verdict transition (repeatable)")
	f.StringVar(&fl.WebhookSecretEnv, "webhook-secret-env", "", "environment variable holding the webhooks' HMAC key")
	f.BoolVar(&fl.Kubernetes, "kubernetes", false, "run the Kubernetes node controller with the pod's in-cluster configuration (docs/kubernetes.md)")
	f.StringVar(&fl.Kubeconfig, "kubeconfig", "", "run the Kubernetes node controller against the cluster this kubeconfig file names")
	f.StringVar(&fl.KubeHostLabel, "kube-host-label", "", "Node label naming its trustpool host (default: the node's name)")
	f.StringVar(&fl.KubeHostAnnotation, "kube-host-annotation", "", "Node annotation naming its trustpool host (default: the node's name)")
	f.BoolVar(&fl.KubeEvict, "kube-evict", false, "add trustpool.io/untrusted:NoExecute (evicting pods) once a node has been without trust for --kube-evict-after")
	f.DurationVar(&fl.KubeEvictAfter, "kube-evict-after", fl.KubeEvictAfter, "grace period before a node without trust gets the NoExecute taint")
	f.DurationVar(&fl.KubeReconcile, "kube-reconcile", fl.KubeReconcile, "how often every Node is written again where it differs")
	f.StringVar(&fl.KubeLeaseNamespace, "kube-lease-namespace", fl.KubeLeaseNamespace, "namespace of the Lease electing the replica that writes Nodes")
	f.StringVar(&fl.KubeLeaseName, "kube-lease-name", fl.KubeLeaseName, "name of that Lease")
	f.StringVar(&fl.KubeExtenderClientCA, "kube-extender-client-ca", "", "PEM bundle of CAs whose client certificates may call the scheduler extender")
	f.StringSliceVar(&fl.KubeExtenderClientNames, "kube-extender-client-name", fl.KubeExtenderClientNames, "subject common name a client certificate must have to call the extender (repeatable)")
	f.StringVar(&fl.LogFormat, "log-format", fl.LogFormat, "log lines: text, or json (one object a line)")
	return cmd
}

// runServer runs the attestation server configured by c.
func runServer(cmd *cobra.Command, c config.Server, cfg server.Config) error {
	cfg.Log = newLogger(os.Stderr, c.LogFormat, slog.LevelInfo)
	if cfg.Kube != nil {
		kube.LogTo(cfg.Log)
	}
	s, err := server.New(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	defer s.Close()
	cfg.Log.Info("attestation server listening", "url", s.URL(), "state", cfg.StateDir)
	return s.Run(cmd.Context())
}

// mergeServer returns the server's configuration: the file's (when
// cfgFile is set) with every flag the person gave over it, validated.
// Every problem of the file and the flags is reported at once.
func mergeServer(cmd *cobra.Command, cfgFile string, fl *config.Server) (config.Server, error) {
	if cfgFile == "" {
		return *fl, fl.Validate()
	}
	c, err := config.LoadServer(cfgFile)
	config.Override(&c, fl, cmd.Flags().Changed)
	return c, errors.Join(err, c.Validate())
}

// serverConfig builds server.Config from c, reading the files it names and
// the secrets from the environment variables it names.
func serverConfig(c config.Server, placementToken string) (server.Config, error) {
	cfg := server.Config{
		StateDir:        c.StateDir,
		Listen:          c.Listen,
		Names:           c.Names,
		DSN:             c.DB,
		Integrity:       integrity.Config{Interval: c.Interval, Validity: c.Validity, Timeout: c.ChallengeTimeout},
		RequireEKCert:   c.RequireEKCert,
		EKCertAdmits:    c.AdmitByEKCert,
		Replica:         c.Replica,
		LeaseTime:       c.LeaseTime,
		AllowIPNames:    c.AllowIPNames,
		EnrollPerMinute: c.EnrollRate,
		AgentConns:      c.AgentConns,
	}
	var errs []error
	if c.EKCABundle != "" {
		b, err := os.ReadFile(c.EKCABundle)
		errs = append(errs, err)
		cfg.EKCABundle = b
	}
	for _, path := range c.EKCRLs {
		b, err := os.ReadFile(path)
		errs = append(errs, err)
		cfg.EKCRLs = append(cfg.EKCRLs, b)
	}
	if c.PlacementTokenEnv != "" {
		if placementToken != "" {
			errs = append(errs, errors.New("--placement-token and placement-token-env: give one"))
		}
		if placementToken = os.Getenv(c.PlacementTokenEnv); placementToken == "" {
			errs = append(errs, fmt.Errorf("placement-token-env: $%s is empty", c.PlacementTokenEnv))
		}
	}
	if c.PlacementURL != "" || c.KeystoneAuthURL != "" {
		placement := nova.TraitSyncConfig{Endpoint: c.PlacementURL, Token: placementToken, Trait: c.PlacementTrait, Interval: c.PlacementInterval}
		if c.KeystoneAuthURL != "" {
			ks := nova.KeystoneAuth{
				AuthURL: c.KeystoneAuthURL, Username: c.KeystoneUsername, Project: c.KeystoneProject,
				UserDomain: c.KeystoneUserDomain, ProjectDomain: c.KeystoneProjectDomain,
				Region: c.KeystoneRegion, Interface: c.KeystoneInterface,
				Password: os.Getenv(c.KeystonePasswordEnv),
			}
			if ks.Password == "" {
				errs = append(errs, fmt.Errorf("keystone-password-env: $%s is empty", c.KeystonePasswordEnv))
			}
			placement.Keystone = &ks
		}
		cfg.Placement = &placement
	}
	cfg.KubeMapping = kube.Mapping{Label: c.KubeHostLabel, Annotation: c.KubeHostAnnotation}
	if c.KubeExtenderClientCA != "" {
		b, err := os.ReadFile(c.KubeExtenderClientCA)
		errs = append(errs, err)
		cfg.KubeClientCA, cfg.KubeClientNames = b, c.KubeExtenderClientNames
	}
	if c.Kubernetes || c.Kubeconfig != "" {
		client, err := kube.NewClient(c.Kubeconfig)
		errs = append(errs, err)
		cfg.Kube = &kube.Config{Client: client, Rules: kube.Rules{Evict: c.KubeEvict, EvictAfter: c.KubeEvictAfter},
			Reconcile: c.KubeReconcile, LeaseNamespace: c.KubeLeaseNamespace, LeaseName: c.KubeLeaseName}
	}
	if len(c.Webhooks) > 0 {
		wc := &notify.Config{Targets: c.Webhooks}
		if c.WebhookSecretEnv != "" {
			if wc.Secret = []byte(os.Getenv(c.WebhookSecretEnv)); len(wc.Secret) == 0 {
				errs = append(errs, fmt.Errorf("webhook-secret-env: $%s is empty", c.WebhookSecretEnv))
			}
		}
		cfg.Webhooks = wc
	}
	return cfg, errors.Join(errs...)
}
