// Package config maps the configuration files of `trustpool server` and
// `trustpool agent` (TOML) to one struct per command, with the defaults
// the flags show, strict decoding (an unknown key is an error) and a
// Validate that reports every problem at once.
//
// Secrets are never values in a file: the file names the environment
// variable (keystone_password_env, webhook_secret_env,
// placement_token_env) or the file (join_token_file) that holds one, and
// a key that looks like a secret value is refused with the key to use
// instead.
package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"
)

//go:embed server.example.toml
var serverExample []byte

//go:embed agent.example.toml
var agentExample []byte

// Example returns the complete, commented example file for command
// ("server" or "agent").
func Example(command string) ([]byte, error) {
	switch command {
	case "server":
		return bytes.Clone(serverExample), nil
	case "agent":
		return bytes.Clone(agentExample), nil
	}
	return nil, fmt.Errorf("no example for %q: want server or agent", command)
}

// LoadServer reads a server configuration file over the defaults.
func LoadServer(path string) (Server, error) {
	c := DefaultServer()
	return c, load(path, &c)
}

// LoadAgent reads an agent configuration file over the defaults.
func LoadAgent(path string) (Agent, error) {
	c := DefaultAgent()
	return c, load(path, &c)
}

// DecodeServer decodes a server configuration over the defaults; name is
// what errors call it.
func DecodeServer(name string, b []byte) (Server, error) {
	c := DefaultServer()
	return c, decode(name, b, &c)
}

// DecodeAgent decodes an agent configuration over the defaults; name is
// what errors call it.
func DecodeAgent(name string, b []byte) (Agent, error) {
	c := DefaultAgent()
	return c, decode(name, b, &c)
}

func load(path string, dst any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return decode(path, b, dst)
}

// decode decodes b into dst and reports every key dst has no field for.
// A syntax or type error stops decoding: it is the only error then.
func decode(name string, b []byte, dst any) error {
	md, err := toml.NewDecoder(bytes.NewReader(b)).Decode(dst)
	if err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	var errs []error
	for _, k := range md.Undecoded() {
		errs = append(errs, fmt.Errorf("config %s: %s", name, unknownKey(k.String())))
	}
	return errors.Join(errs...)
}

// secretKeys are the keys a person might write a secret under, and the
// key that names where the secret is instead.
var secretKeys = map[string]string{
	"keystone_password": "keystone_password_env",
	"webhook_secret":    "webhook_secret_env",
	"placement_token":   "placement_token_env",
	"join_token":        "join_token_file",
}

// unknownKey says why key is refused: a secret value, or a key that does
// not exist.
func unknownKey(key string) string {
	if use, ok := secretKeys[key]; ok {
		return fmt.Sprintf("key %q: secrets are not read from the config file; name where it is with %s", key, use)
	}
	for _, w := range []string{"password", "secret", "token", "_key"} {
		if strings.Contains(key, w) && !strings.HasSuffix(key, "_env") && !strings.HasSuffix(key, "_file") {
			return fmt.Sprintf("unknown key %q (secrets are not read from the config file, only from files or environment variables)", key)
		}
	}
	return fmt.Sprintf("unknown key %q", key)
}

// flagName is the command-line flag of a config field: its `flag` tag, or
// its TOML key with dashes for underscores.
func flagName(f reflect.StructField) string {
	if n := f.Tag.Get("flag"); n != "" {
		return n
	}
	return strings.ReplaceAll(f.Tag.Get("toml"), "_", "-")
}

// FlagNames returns the flags that set fields of a *Server or *Agent.
func FlagNames(c any) []string {
	t := reflect.TypeOf(c).Elem()
	var names []string
	for i := range t.NumField() {
		names = append(names, flagName(t.Field(i)))
	}
	return names
}

// Override copies into dst every field of flags whose flag the person set
// (changed reports that, as cobra's Flags().Changed does): flags win over
// the file, and a flag left alone does not reset a value the file set.
func Override[T Server | Agent](dst, flags *T, changed func(flag string) bool) {
	d, s := reflect.ValueOf(dst).Elem(), reflect.ValueOf(flags).Elem()
	for i := range d.NumField() {
		if changed(flagName(d.Type().Field(i))) {
			d.Field(i).Set(s.Field(i))
		}
	}
}

// envName checks that an environment variable's name is one.
func envName(key, v string) error {
	if v == "" {
		return nil
	}
	for i, r := range v {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return fmt.Errorf("%s: %q is not an environment variable's name", key, v)
		}
	}
	return nil
}
