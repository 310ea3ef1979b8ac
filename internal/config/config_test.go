package config

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// TestExamplesLoad loads each example, checks it is valid, names every key
// of its struct, and that packaging/ ships it unchanged.
func TestExamplesLoad(t *testing.T) {
	for _, tc := range []struct {
		command string
		cfg     any
		decode  func(string, []byte) (validator, error)
	}{
		{"server", &Server{}, func(n string, b []byte) (validator, error) { c, err := DecodeServer(n, b); return &c, err }},
		{"agent", &Agent{}, func(n string, b []byte) (validator, error) { c, err := DecodeAgent(n, b); return &c, err }},
	} {
		t.Run(tc.command, func(t *testing.T) {
			ex, err := Example(tc.command)
			if err != nil {
				t.Fatal(err)
			}
			c, err := tc.decode(tc.command, ex)
			if err != nil {
				t.Fatalf("example does not load: %v", err)
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("example is not valid: %v", err)
			}
			// Complete: every key is set or shown commented out.
			md, err := toml.Decode(string(ex), tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			typ := reflect.TypeOf(tc.cfg).Elem()
			for i := range typ.NumField() {
				key := typ.Field(i).Tag.Get("toml")
				if !md.IsDefined(key) && !bytes.Contains(ex, []byte("\n# "+key+" = ")) {
					t.Errorf("example lacks key %s", key)
				}
			}
			shipped, err := os.ReadFile("../../packaging/" + tc.command + ".toml")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(shipped, ex) {
				t.Errorf("packaging/%s.toml differs from `trustpool config example %s`: run it > packaging/%s.toml", tc.command, tc.command, tc.command)
			}
		})
	}
}

type validator interface{ Validate() error }

// TestExamplesAreDefaults: a value the example sets is the default, except
// where the example says what an installed server should do.
func TestExamplesAreDefaults(t *testing.T) {
	ex, _ := Example("server")
	c, err := DecodeServer("server", ex)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultServer()
	want.Listen = "0.0.0.0:8443"
	c.Names, c.EKCRLs, c.Webhooks = nil, nil, nil
	if !reflect.DeepEqual(c, want) {
		t.Errorf("server example:\n got %+v\nwant %+v", c, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       []string // every one must be in the error
	}{
		{"unknown key", "listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\nintervall = \"1s\"\n", []string{`unknown key "listen_addr"`, `unknown key "intervall"`}},
		{"secret value", "keystone_password = \"hunter2\"\n", []string{`"keystone_password"`, "keystone_password_env"}},
		{"secret-looking key", "api_token = \"x\"\n", []string{`unknown key "api_token"`, "secrets are not read"}},
		{"not a duration", "interval = \"often\"\n", []string{"interval"}},
		{"wrong type", "enroll_rate = \"many\"\n", []string{"enroll_rate"}},
		{"syntax", "listen = \n", []string{"config bad.toml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeServer("bad.toml", []byte(tc.file))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	_, err := DecodeAgent("agent.toml", []byte("join_token = \"abc\"\n"))
	if err == nil || !strings.Contains(err.Error(), "join_token_file") {
		t.Errorf("agent join_token in the file: %v", err)
	}
}

func TestValidateReportsEverything(t *testing.T) {
	c, err := DecodeServer("s.toml", []byte(`
listen = "nope"
interval = "0s"
validity = "-1s"
enroll_rate = 0.0
agent_conns = -2
require_ek_cert = true
keystone_interface = "private"
db = "postgres://trustpool:hunter2@db.example/trustpool"
webhook_secret_env = "NOT A NAME"
webhooks = ["https://hooks.example/x"]
`))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"listen", "interval", "validity", "enroll_rate", "agent_conns", "ek_ca_bundle", "keystone_interface", "db: the URL carries a password", "webhook_secret_env"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not name %s:\n%v", w, err)
		}
	}
	a, err := DecodeAgent("a.toml", []byte("server = \"http://attest.example\"\nmode = \"poll\"\nlog_level = \"info\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = a.Validate()
	for _, w := range []string{"server", "server_ca", "mode"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("agent error does not name %s: %v", w, err)
		}
	}
	if _, err := DecodeAgent("a.toml", []byte("log_level = \"loud\"\n")); err == nil {
		t.Error("log_level loud accepted")
	}
}

func TestOverride(t *testing.T) {
	file := DefaultServer()
	file.Listen, file.Interval = "127.0.0.1:1", time.Minute
	flags := DefaultServer()
	flags.Listen, flags.Names = "127.0.0.1:2", []string{"a.example"}
	Override(&file, &flags, func(name string) bool { return name == "listen" || name == "name" })
	if file.Listen != "127.0.0.1:2" || file.Interval != time.Minute || len(file.Names) != 1 {
		t.Errorf("after override: %+v", file)
	}
}

func TestLogFormat(t *testing.T) {
	for _, f := range []string{"text", "json"} {
		a, err := DecodeAgent("a.toml", []byte("server = \"https://attest.example\"\nserver_ca = \"ca.pem\"\nlog_format = \""+f+"\"\n"))
		if err != nil || a.LogFormat != f {
			t.Errorf("log_format %s: %+v %v", f, a.LogFormat, err)
		}
	}
	a, err := DecodeAgent("a.toml", []byte("server = \"https://attest.example\"\nserver_ca = \"ca.pem\"\nlog_format = \"xml\"\n"))
	if err == nil {
		err = a.Validate()
	}
	if err == nil || !strings.Contains(err.Error(), "log_format") {
		t.Errorf("log_format xml: %v, want an error naming log_format", err)
	}
}
