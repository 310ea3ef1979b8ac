package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"trustpool/internal/agent/tpm"
)

// elsewhere are the README commands this test does not run, with the
// check that runs each as written.
var elsewhere = map[string]string{
	"go run ./cmd/trustpool demo": "internal/demo TestDemoServesNova runs the demo and stops it with SIGINT",
	"make deps check":             ".ci/run runs it",
	"trustpool demo --nodes 5 --tampered 1 --no-launch 1 --once --json": "make demo-smoke runs it and checks the contract",
}

// onThisMachine rewrites a README command for this machine, and only in
// what points at the operator's machines: state directories under a temp
// dir, every address on loopback, the server's DNS name as localhost (its
// certificate names it), the in-process simulator for /dev/tpmrm0.
func onThisMachine(cmd, dir string) string {
	return strings.NewReplacer(
		"/var/lib/trustpool-agent", filepath.Join(dir, "agent"),
		"/var/lib/trustpool", filepath.Join(dir, "server"),
		"0.0.0.0:", "127.0.0.1:",
		"10.0.0.17", "127.0.0.1",
		"attest.example.com:8443", "localhost:8443",
		"/dev/tpmrm0", "simulator",
	).Replace(cmd)
}

// readmeCommands returns the commands of README.md's indented code blocks
// before its Layout section, continuation lines joined.
func readmeCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	var cur string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() && sc.Text() != "## Layout" {
		line, ok := strings.CutPrefix(sc.Text(), "    ")
		if !ok {
			continue // prose
		}
		line = strings.TrimSpace(line)
		cur += line
		if strings.HasSuffix(cur, `\`) {
			cur = strings.TrimSuffix(cur, `\`)
			continue
		}
		cmds = append(cmds, cur)
		cur = ""
	}
	return cmds
}

// TestREADMECommands runs the README's commands in order, as an operator
// would, against a real server and agent on loopback: every command either
// runs here and succeeds, or is listed in elsewhere with the check that
// runs it. A README command neither runs nor is listed fails the test.
func TestREADMECommands(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed to run the README's commands")
	}
	if tp, err := tpm.Open(tpm.SimulatorAddr); errors.Is(err, tpm.ErrNoSimulator) {
		t.Fatal("the README's agent runs on the in-process simulator here: build with cgo")
	} else if err == nil {
		tp.Close()
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "trustpool"), ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "TRUSTPOOL_STATE_DIR="+filepath.Join(dir, "server"))
	// run runs one command in bash with the variables set so far.
	vars := map[string]string{}
	run := func(cmd string) (string, error) {
		c := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", cmd)
		c.Dir = filepath.Join(dir, "server")
		c.Env = env
		for k, v := range vars {
			c.Env = append(c.Env, k+"="+v)
		}
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, stderr.Bytes())
		}
		return string(out), err
	}
	// start runs a long-lived command (server, agent) until the test ends.
	start := func(cmd string) {
		c := exec.CommandContext(ctx, "bash", "-c", "exec "+cmd)
		c.Dir = filepath.Join(dir, "server")
		c.Env = env
		for k, v := range vars {
			c.Env = append(c.Env, k+"="+v)
		}
		var log bytes.Buffer
		c.Stdout, c.Stderr = &log, &log
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			c.Process.Signal(os.Interrupt)
			c.Wait()
			if t.Failed() {
				t.Logf("%s:\n%s", cmd, log.String())
			}
		})
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); !ok(); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waited a minute for %s", what)
			}
		}
	}
	hostState := func(name string) string {
		out, err := run("trustpool hosts show --output json " + name)
		if err != nil {
			return ""
		}
		var h struct{ State string }
		json.Unmarshal([]byte(out), &h)
		return h.State
	}

	ran := 0
	for _, readme := range readmeCommands(t) {
		if why, ok := elsewhere[readme]; ok {
			t.Logf("not run here: %s (%s)", readme, why)
			continue
		}
		cmd := onThisMachine(readme, dir)
		ran++
		switch {
		case strings.HasPrefix(cmd, "trustpool server "):
			if err := os.MkdirAll(filepath.Join(dir, "server"), 0o700); err != nil {
				t.Fatal(err)
			}
			start(cmd)
			waitFor("the server on 127.0.0.1:8443", func() bool {
				c, err := net.Dial("tcp", "127.0.0.1:8443")
				if err == nil {
					c.Close()
				}
				return err == nil
			})
		case strings.HasPrefix(cmd, "TOKEN="):
			out, err := run(cmd + "; echo $TOKEN")
			if err != nil {
				t.Fatalf("%s: %v\n%s", readme, err, out)
			}
			vars["TOKEN"] = strings.TrimSpace(out)
		case strings.HasPrefix(cmd, "trustpool agent "):
			start(cmd)
			waitFor("compute-17.example.com admitted", func() bool { return hostState("compute-17.example.com") == "active" })
			// The same node without a join token, for the approval below.
			pending := strings.NewReplacer("compute-17", "compute-18", "9443", "9444", "/agent", "/agent18", ` --join-token "$JOIN_TOKEN"`, "").Replace(cmd)
			start(pending)
			waitFor("compute-18.example.com pending", func() bool {
				out, err := run("trustpool hosts pending --json")
				var ps []struct {
					Host          string
					EKFingerprint string `json:"ek_fingerprint"`
				}
				if err != nil || json.Unmarshal([]byte(out), &ps) != nil || len(ps) != 1 {
					return false
				}
				vars["EK_FINGERPRINT"] = ps[0].EKFingerprint
				return ps[0].Host == "compute-18.example.com"
			})
		default:
			out, err := run(cmd)
			if err != nil {
				t.Fatalf("%s: %v\n%s", readme, err, out)
			}
			if strings.HasPrefix(cmd, "curl ") {
				var tok struct{ Token string }
				if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.Token == "" {
					t.Fatalf("%s: answered %s, want a join token", readme, out)
				}
				vars["JOIN_TOKEN"] = tok.Token
			}
			if strings.HasPrefix(cmd, "trustpool hosts approve ") && hostState("compute-18.example.com") != "active" {
				t.Fatalf("%s: compute-18.example.com is not admitted", readme)
			}
		}
	}
	if ran < 8 {
		t.Fatalf("ran %d README commands; the README's code blocks were not found", ran)
	}
}
