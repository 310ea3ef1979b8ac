package demo_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"trustpool/internal/agent/swtpm"
	"trustpool/internal/agent/swtpm/swtpmtest"
)

// TestDemoServesNova runs the demo as a user would (the real binary, real
// agent processes on swtpm) and talks to it as Nova's TrustedFilter does:
// trusting only the CA the demo wrote, sending the auth blob it wrote.
// Ctrl-C must then stop every process the demo started.
func TestDemoServesNova(t *testing.T) {
	swtpmtest.RequireBinary(t, swtpm.Binary)
	bin := filepath.Join(t.TempDir(), "trustpool")
	_, file, _, _ := runtime.Caller(0)
	build := exec.Command("go", "build", "-o", bin, "./cmd/trustpool")
	build.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	state := t.TempDir()
	demo := exec.Command(bin, "demo", "--nodes", "3", "--tampered", "1", "--listen", addr, "--state-dir", state, "--json", "--interval", "2s")
	demo.Stderr = os.Stderr
	// Its own process group, so the test can see that nothing outlives it.
	demo.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := demo.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-demo.Process.Pid, syscall.SIGKILL); demo.Wait() })
	lines := bufio.NewScanner(out)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	for i := 0; i < 2; i++ { // two rounds: it keeps serving
		if !lines.Scan() {
			t.Fatalf("demo printed no pool line: %v", lines.Err())
		}
		var pool struct {
			Hosts []struct {
				Host  string `json:"host_name"`
				Level string `json:"trust_lvl"`
			} `json:"hosts"`
		}
		if err := json.Unmarshal(lines.Bytes(), &pool); err != nil || len(pool.Hosts) != 3 {
			t.Fatalf("round %d: %v: %s", i, err, lines.Bytes())
		}
	}

	caPEM, err := os.ReadFile(filepath.Join(state, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blob, err := os.ReadFile(filepath.Join(state, "nova-auth-blob"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(state, "admin.token")); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	// Nova verifies the certificate, host name included (here an IP SAN).
	nova := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	poll := func(blob string, hosts ...string) (int, map[string]string) {
		body, _ := json.Marshal(map[string]any{"count": len(hosts), "hosts": hosts})
		req, _ := http.NewRequest("POST", "https://"+addr+"/OpenAttestationWebServices/V1.0/PollHosts", bytes.NewReader(body))
		req.Header.Set("content-type", "application/json")
		req.Header.Set("Accept", "application/json")
		req.Header.Set("x-auth-blob", blob)
		resp, err := nova.Do(req)
		if err != nil {
			t.Fatalf("PollHosts: %v", err)
		}
		defer resp.Body.Close()
		var ans struct {
			Hosts []struct {
				Host  string `json:"host_name"`
				Level string `json:"trust_lvl"`
				VTime string `json:"vtime"`
			} `json:"hosts"`
		}
		levels := map[string]string{}
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
				t.Fatal(err)
			}
			for _, h := range ans.Hosts {
				if _, err := time.Parse(time.RFC3339, h.VTime); err != nil {
					t.Errorf("%s: vtime %q: %v", h.Host, h.VTime, err)
				}
				levels[h.Host] = h.Level
			}
		}
		return resp.StatusCode, levels
	}
	code, levels := poll(strings.TrimSpace(string(blob)), "node1", "node2", "node3", "node9.example.com")
	want := map[string]string{"node1": "trusted", "node2": "trusted", "node3": "untrusted", "node9.example.com": "unknown"}
	if code != http.StatusOK || fmt.Sprint(levels) != fmt.Sprint(want) {
		t.Fatalf("PollHosts: %d %v, want %v", code, levels, want)
	}
	if code, _ := poll("wrong-blob", "node1"); code != http.StatusUnauthorized {
		t.Fatalf("PollHosts with a wrong blob: %d, want 401", code)
	}

	// Ctrl-C stops the demo, its agents and its swtpms.
	demo.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- demo.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop on Ctrl-C")
	}
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(-demo.Process.Pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatal("processes of the demo outlived it")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDemoPushMode runs the demo's contract with push agents (no agent
// listens; each fetches its challenges and posts its evidence; the
// operator's attest after golden import reaches them through their
// long-poll).
func TestDemoPushMode(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "trustpool")
	_, file, _, _ := runtime.Caller(0)
	build := exec.Command("go", "build", "-o", bin, "./cmd/trustpool")
	build.Dir = filepath.Join(filepath.Dir(file), "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "demo", "--mode", "push", "--tpm", "simulator", "--nodes", "3", "--tampered", "1", "--once", "--json").Output()
	if err != nil {
		t.Fatalf("demo --mode push: %v", err)
	}
	var pool struct {
		Hosts []struct {
			Host  string `json:"host_name"`
			Level string `json:"trust_lvl"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal(out, &pool); err != nil || len(pool.Hosts) != 3 {
		t.Fatalf("%v: %s", err, out)
	}
	for i, want := range []string{"trusted", "trusted", "untrusted"} {
		if pool.Hosts[i].Level != want {
			t.Errorf("%s is %s, want %s", pool.Hosts[i].Host, pool.Hosts[i].Level, want)
		}
	}
}
