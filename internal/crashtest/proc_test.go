package crashtest_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// needTools skips without a Go toolchain or a C compiler (the agents' TPM
// simulator is C code), except in CI where both must be there.
func needTools(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"go", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI: %v", tool, err)
			}
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
}

// build compiles the trustpool binary from this module into a temporary
// directory.
func build(t *testing.T) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "trustpool")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/trustpool")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/trustpool: %v\n%s", err, out)
	}
	return bin
}

// proc is a child process whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
}

// start runs bin with args; the process is stopped when the test ends, and
// killed by the kernel if the test process dies first.
func start(t *testing.T, name, bin, logPath string, args ...string) *proc {
	t.Helper()
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: exec.Command(bin, args...), log: logPath, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		out.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// stop interrupts the process and kills it if it has not exited after a
// while.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// output is what the process wrote so far.
func (p *proc) output() string {
	b, _ := os.ReadFile(p.log)
	return string(bytes.TrimSpace(b))
}

var urlLine = regexp.MustCompile(`msg="attestation server listening" url=(https://[0-9.]+:[0-9]+)`)

// serverURL waits for the server's "listening" log line and returns its URL.
func (p *proc) serverURL(t *testing.T) string {
	t.Helper()
	var url string
	waitFor(t, p.name+" listening", func() bool {
		if p.exited() {
			t.Fatalf("%s exited: %s", p.name, p.output())
		}
		if m := urlLine.FindStringSubmatch(p.output()); m != nil {
			url = m[1]
		}
		return url != ""
	})
	return url
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
