package packaging

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"debug/elf"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	serverUnit = "/usr/lib/systemd/system/trustpool-server.service"
	agentUnit  = "/usr/lib/systemd/system/trustpool-agent.service"
)

// need skips the test outside CI when it cannot run here, and fails it
// under CI=true: CI runs as root on a machine it may install packages on.
func need(t *testing.T, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDebInstallsAndStarts builds the package with `make deb`, installs it
// into this system with dpkg, checks its files, verifies its units with
// systemd-analyze, runs the server unit's ExecStart on a temporary config
// (systemd is not PID 1 here) until /healthz answers, stops it and removes
// the package.
func TestDebInstallsAndStarts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and installs a package")
	}
	_, errDpkg := exec.LookPath("dpkg")
	need(t, os.Geteuid() == 0 && errDpkg == nil, "installing the .deb needs root and dpkg")
	_, errAnalyze := exec.LookPath("systemd-analyze")
	need(t, errAnalyze == nil, "systemd-analyze (Debian package systemd) is needed to verify the units")

	run(t, "make", "-C", "..", "deb")
	// No maintainer scripts: installing enables and starts nothing; the
	// configs are conffiles, kept on upgrade when edited.
	info := run(t, "dpkg-deb", "-I", "../bin/trustpool.deb")
	if strings.Contains(info, "postinst") || !strings.Contains(info, "conffiles") {
		t.Errorf("the package has maintainer scripts or no conffiles:\n%s", info)
	}
	run(t, "dpkg", "-i", "../bin/trustpool.deb")
	t.Cleanup(func() { exec.Command("dpkg", "-P", "trustpool").Run() })

	files := run(t, "dpkg", "-L", "trustpool")
	for _, f := range []string{"/usr/bin/trustpool", serverUnit, agentUnit, "/etc/trustpool/server.toml", "/etc/trustpool/agent.toml"} {
		if !strings.Contains(files, f+"\n") {
			t.Errorf("dpkg -L trustpool does not list %s:\n%s", f, files)
		}
	}
	for _, f := range []string{"server.toml", "agent.toml", "trustpool-server.service", "trustpool-agent.service"} {
		want, _ := os.ReadFile(f)
		dst := "/etc/trustpool/" + f
		if strings.HasSuffix(f, ".service") {
			dst = "/usr/lib/systemd/system/" + f
		}
		if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, want) {
			t.Errorf("installed %s is not packaging/%s (%v)", dst, f, err)
		}
	}
	bin, err := elf.Open("/usr/bin/trustpool")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range bin.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("/usr/bin/trustpool is dynamically linked; the package's binary is static")
		}
	}
	bin.Close()
	if out, err := exec.Command("systemd-analyze", "verify", serverUnit, agentUnit).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The units' hardening, as docs/packaging.md lists it.
	server, agent := unitLines(t, serverUnit), unitLines(t, agentUnit)
	for _, l := range []string{"ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes", "CapabilityBoundingSet=", "DynamicUser=yes", "StateDirectory=trustpool", "PrivateDevices=yes", "EnvironmentFile=-/etc/default/trustpool-server"} {
		if !server[l] {
			t.Errorf("%s lacks %s", serverUnit, l)
		}
	}
	for _, l := range []string{"ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes", "CapabilityBoundingSet=", "DevicePolicy=closed", "DeviceAllow=/dev/tpmrm0 rw", "StateDirectory=trustpool-agent", "EnvironmentFile=-/etc/default/trustpool-agent"} {
		if !agent[l] {
			t.Errorf("%s lacks %s", agentUnit, l)
		}
	}
	for l := range agent {
		if strings.HasPrefix(l, "DeviceAllow=") && l != "DeviceAllow=/dev/tpmrm0 rw" {
			t.Errorf("%s allows another device: %s", agentUnit, l)
		}
	}

	startServer(t, server)

	run(t, "dpkg", "-r", "trustpool")
	if _, err := os.Stat("/usr/bin/trustpool"); !os.IsNotExist(err) {
		t.Errorf("after dpkg -r, /usr/bin/trustpool: %v", err)
	}
}

// unitLines returns the set of a unit file's lines, trimmed.
func unitLines(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		lines[strings.TrimSpace(sc.Text())] = true
	}
	return lines
}

// startServer runs the unit's ExecStart with the installed config copied
// to a temporary one (state in a temp dir, listening on loopback), waits
// for /healthz and stops the server with SIGTERM, as systemd would.
func startServer(t *testing.T, unit map[string]bool) {
	var execStart string
	for l := range unit {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			execStart = v
		}
	}
	args := strings.Fields(execStart)
	if len(args) < 2 || args[len(args)-2] != "--config" || args[len(args)-1] != "/etc/trustpool/server.toml" {
		t.Fatalf("ExecStart=%s: want /usr/bin/trustpool server --config /etc/trustpool/server.toml", execStart)
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	installed, err := os.ReadFile("/etc/trustpool/server.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer(
		`state_dir = "/var/lib/trustpool"`, `state_dir = "`+state+`"`,
		`listen = "0.0.0.0:8443"`, `listen = "`+addr+`"`,
	).Replace(string(installed))
	if cfg == string(installed) {
		t.Fatal("the installed server.toml has no state_dir and listen lines to point at this test")
	}
	cfgFile := filepath.Join(dir, "server.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	args[len(args)-1] = cfgFile
	cmd := exec.Command(args[0], args[1:]...)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-exited
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for healthy := false; !healthy; {
		select {
		case err := <-exited:
			t.Fatalf("the server exited before /healthz answered: %v\n%s", err, logs.String())
		case <-ctx.Done():
			t.Fatalf("/healthz did not answer within 60 s\n%s", logs.String())
		case <-tick.C:
			healthy = healthz(state, addr)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("server after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the server did not stop within 30 s of SIGTERM\n%s", logs.String())
	}
}

// healthz reports whether the server answers GET /healthz with 200 over
// TLS verified against the CA it wrote to its state directory.
func healthz(state, addr string) bool {
	ca, err := os.ReadFile(filepath.Join(state, "ca.pem"))
	if err != nil {
		return false
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get("https://" + addr + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
