package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
)

// Agent is `trustpool agent`'s configuration: each field is one key of
// the file and one flag (the key with dashes).
type Agent struct {
	Name          string     `toml:"name"`
	Server        string     `toml:"server"`
	ServerCA      string     `toml:"server_ca"`
	Mode          string     `toml:"mode"`
	Listen        string     `toml:"listen"`
	Advertise     string     `toml:"advertise"`
	StateDir      string     `toml:"state_dir"`
	TPM           string     `toml:"tpm"`
	EventLog      string     `toml:"event_log"`
	DRTMLog       string     `toml:"drtm_log"`
	JoinTokenFile string     `toml:"join_token_file"`
	LogLevel      slog.Level `toml:"log_level"`
	LogFormat     string     `toml:"log_format"`
}

// DefaultAgent returns the defaults, the same as the flags': the name is
// this machine's host name.
func DefaultAgent() Agent {
	host, _ := os.Hostname()
	return Agent{
		Name:      host,
		Mode:      "pull",
		Listen:    ":9443",
		StateDir:  "/var/lib/trustpool-agent",
		TPM:       "/dev/tpmrm0",
		LogLevel:  slog.LevelInfo,
		LogFormat: "text",
	}
}

// Validate reports every problem at once.
func (c *Agent) Validate() error {
	var errs []error
	if err := checkLogFormat(c.LogFormat); err != nil {
		errs = append(errs, err)
	}
	if c.Name == "" {
		errs = append(errs, errors.New("name is required"))
	}
	if u, err := url.Parse(c.Server); c.Server == "" || err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("server %q: want the server's https:// URL", c.Server))
	}
	if c.ServerCA == "" {
		errs = append(errs, errors.New("server_ca is required (the server's ca.pem)"))
	}
	switch c.Mode {
	case "pull":
		if c.Listen == "" {
			errs = append(errs, errors.New("listen is required in pull mode"))
		}
	case "push":
	default:
		errs = append(errs, fmt.Errorf("mode %q: want pull or push", c.Mode))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir is required"))
	}
	if c.TPM == "" {
		errs = append(errs, errors.New("tpm is required"))
	}
	return errors.Join(errs...)
}

// checkLogFormat accepts the log formats: text (logfmt-like) and json (one
// object a line, for log collectors).
func checkLogFormat(f string) error {
	if f != "text" && f != "json" {
		return fmt.Errorf("log_format %q: want text or json", f)
	}
	return nil
}
