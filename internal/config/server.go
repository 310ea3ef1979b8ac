package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Server is `trustpool server`'s configuration: each field is one key of
// the file and one flag (the key with dashes, or its flag tag).
type Server struct {
	StateDir         string        `toml:"state_dir"`
	Listen           string        `toml:"listen"`
	Names            []string      `toml:"names" flag:"name"`
	DB               string        `toml:"db"`
	Interval         time.Duration `toml:"interval"`
	Validity         time.Duration `toml:"validity"`
	ChallengeTimeout time.Duration `toml:"challenge_timeout"`
	AgentConns       int           `toml:"agent_conns"`
	EnrollRate       float64       `toml:"enroll_rate"`
	EKCABundle       string        `toml:"ek_ca_bundle"`
	RequireEKCert    bool          `toml:"require_ek_cert"`
	AdmitByEKCert    bool          `toml:"admit_by_ek_cert"`
	EKCRLs           []string      `toml:"ek_crls" flag:"ek-crl"`
	Replica          string        `toml:"replica"`
	LeaseTime        time.Duration `toml:"lease_time"`
	AllowIPNames     bool          `toml:"allow_ip_names"`

	PlacementURL      string        `toml:"placement_url"`
	PlacementTokenEnv string        `toml:"placement_token_env"`
	PlacementTrait    string        `toml:"placement_trait"`
	PlacementInterval time.Duration `toml:"placement_interval"`

	KeystoneAuthURL       string `toml:"keystone_auth_url"`
	KeystoneUsername      string `toml:"keystone_username"`
	KeystonePasswordEnv   string `toml:"keystone_password_env"`
	KeystoneProject       string `toml:"keystone_project"`
	KeystoneUserDomain    string `toml:"keystone_user_domain"`
	KeystoneProjectDomain string `toml:"keystone_project_domain"`
	KeystoneRegion        string `toml:"keystone_region"`
	KeystoneInterface     string `toml:"keystone_interface"`

	Webhooks         []string `toml:"webhooks" flag:"webhook"`
	WebhookSecretEnv string   `toml:"webhook_secret_env"`

	Kubernetes              bool          `toml:"kubernetes"`
	Kubeconfig              string        `toml:"kubeconfig"`
	KubeHostLabel           string        `toml:"kube_host_label"`
	KubeHostAnnotation      string        `toml:"kube_host_annotation"`
	KubeEvict               bool          `toml:"kube_evict"`
	KubeEvictAfter          time.Duration `toml:"kube_evict_after"`
	KubeReconcile           time.Duration `toml:"kube_reconcile"`
	KubeLeaseNamespace      string        `toml:"kube_lease_namespace"`
	KubeLeaseName           string        `toml:"kube_lease_name"`
	KubeExtenderClientCA    string        `toml:"kube_extender_client_ca"`
	KubeExtenderClientNames []string      `toml:"kube_extender_client_names" flag:"kube-extender-client-name"`

	LogFormat string `toml:"log_format"`
}

// DefaultServer returns the defaults, the same as the flags'.
func DefaultServer() Server {
	return Server{
		StateDir:                "/var/lib/trustpool",
		Listen:                  "127.0.0.1:8443",
		LogFormat:               "text",
		Interval:                30 * time.Second,
		ChallengeTimeout:        10 * time.Second,
		EnrollRate:              60,
		LeaseTime:               30 * time.Second,
		PlacementTrait:          "CUSTOM_TRUSTED_HOST",
		PlacementInterval:       5 * time.Minute,
		KeystonePasswordEnv:     "KEYSTONE_PASSWORD",
		KeystoneUserDomain:      "Default",
		KeystoneProjectDomain:   "Default",
		KeystoneInterface:       "public",
		KubeEvictAfter:          5 * time.Minute,
		KubeReconcile:           5 * time.Minute,
		KubeLeaseNamespace:      "trustpool",
		KubeLeaseName:           "trustpool-node-controller",
		KubeExtenderClientNames: []string{"system:kube-scheduler"},
	}
}

// Validate reports every problem at once.
func (c *Server) Validate() error {
	var errs []error
	if err := checkLogFormat(c.LogFormat); err != nil {
		errs = append(errs, err)
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir is required"))
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: want host:port", c.Listen))
	}
	for _, n := range c.Names {
		if n == "" {
			errs = append(errs, errors.New("names: an empty name"))
		}
	}
	if c.DB != "" && !strings.HasPrefix(c.DB, "sqlite:") && !strings.HasPrefix(c.DB, "postgres://") && !strings.HasPrefix(c.DB, "postgresql://") {
		errs = append(errs, fmt.Errorf("db: want sqlite:/path or a postgres:// URL"))
	}
	if u, err := url.Parse(c.DB); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			errs = append(errs, errors.New("db: the URL carries a password: secrets are not read from the config file; leave it out and set $PGPASSWORD (or a .pgpass file)"))
		}
	}
	positive := []struct {
		key string
		d   time.Duration
	}{{"interval", c.Interval}, {"challenge_timeout", c.ChallengeTimeout}, {"lease_time", c.LeaseTime}, {"placement_interval", c.PlacementInterval},
		{"kube_evict_after", c.KubeEvictAfter}, {"kube_reconcile", c.KubeReconcile}}
	for _, p := range positive {
		if p.d <= 0 {
			errs = append(errs, fmt.Errorf("%s %v: want a positive duration such as \"30s\"", p.key, p.d))
		}
	}
	if c.AgentConns < -1 {
		errs = append(errs, fmt.Errorf("agent_conns %d: want 0 (the default, 256), -1 (none) or a number of connections", c.AgentConns))
	}
	if c.Validity < 0 {
		errs = append(errs, fmt.Errorf("validity %v: want 0 (3 × interval) or a positive duration", c.Validity))
	}
	if c.EnrollRate <= 0 {
		errs = append(errs, fmt.Errorf("enroll_rate %v: want a positive number of requests a minute", c.EnrollRate))
	}
	if (c.RequireEKCert || c.AdmitByEKCert || len(c.EKCRLs) > 0) && c.EKCABundle == "" {
		errs = append(errs, errors.New("require_ek_cert, admit_by_ek_cert and ek_crls need ek_ca_bundle"))
	}
	switch c.KeystoneInterface {
	case "public", "internal", "admin":
	default:
		errs = append(errs, fmt.Errorf("keystone_interface %q: want public, internal or admin", c.KeystoneInterface))
	}
	if c.KeystoneAuthURL != "" && (c.KeystoneUsername == "" || c.KeystoneProject == "") {
		errs = append(errs, errors.New("keystone_auth_url needs keystone_username and keystone_project"))
	}
	if c.PlacementTokenEnv != "" && c.PlacementURL == "" {
		errs = append(errs, errors.New("placement_token_env needs placement_url"))
	}
	if c.PlacementTokenEnv != "" && c.KeystoneAuthURL != "" {
		errs = append(errs, errors.New("placement_token_env and keystone_auth_url: choose one way to authenticate to Placement"))
	}
	if c.KubeHostLabel != "" && c.KubeHostAnnotation != "" {
		errs = append(errs, errors.New("kube_host_label and kube_host_annotation: map nodes to hosts by one of them"))
	}
	if c.KubeEvict && !c.Kubernetes && c.Kubeconfig == "" {
		errs = append(errs, errors.New("kube_evict needs the node controller: set kubernetes or kubeconfig"))
	}
	if (c.Kubernetes || c.Kubeconfig != "") && (c.KubeLeaseNamespace == "" || c.KubeLeaseName == "") {
		errs = append(errs, errors.New("kube_lease_namespace and kube_lease_name are required with the node controller"))
	}
	for _, n := range c.KubeExtenderClientNames {
		if n == "" {
			errs = append(errs, errors.New("kube_extender_client_names: an empty name"))
		}
	}
	if c.KubeExtenderClientCA != "" && len(c.KubeExtenderClientNames) == 0 {
		errs = append(errs, errors.New("kube_extender_client_ca needs kube_extender_client_names (whom it admits)"))
	}
	if c.WebhookSecretEnv != "" && len(c.Webhooks) == 0 {
		errs = append(errs, errors.New("webhook_secret_env needs webhooks"))
	}
	for _, e := range []struct{ key, v string }{
		{"placement_token_env", c.PlacementTokenEnv},
		{"keystone_password_env", c.KeystonePasswordEnv},
		{"webhook_secret_env", c.WebhookSecretEnv},
	} {
		if err := envName(e.key, e.v); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
