// Package swtpm runs Debian's swtpm, the libtpms software TPM that QEMU uses,
// on loopback for the demo, integration tests and the Intel TXT path, and
// speaks its control channel.
//
// A Process serves the TPM's data channel (open it with tpm.Open(p.Addr()))
// and a control channel that can do what only the platform can do on real
// hardware: set the locality of the commands that follow and emulate the
// dynamic launch (DRTM) of Intel TXT, which resets PCRs 17-22 and measures
// into PCR 17. A TPM whose control channel anyone can reach proves nothing
// about a platform: swtpm is for testing and demos, never for production
// attestation, and it binds only 127.0.0.1.
package swtpm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Binary is the swtpm executable looked up on PATH.
const Binary = "swtpm"

const (
	// startAttempts bounds the retries when the ports we picked are taken
	// before swtpm binds them.
	startAttempts = 5
	// startTimeout bounds one start when ctx has no earlier deadline.
	// swtpm is ready in about 20 ms; a cold first start creates the
	// TPM's seeds and still takes well under a second.
	startTimeout = 10 * time.Second
	// stopTimeout bounds the wait for swtpm to exit after CMD_SHUTDOWN
	// before it is killed.
	stopTimeout = 5 * time.Second
)

// Config configures a swtpm process.
type Config struct {
	// StateDir holds the TPM's persistent state (seeds, NV, persistent
	// objects). The same directory gives the same EK and AK across restarts.
	// It must exist.
	StateDir string
	// Log receives swtpm's output; nil discards it.
	Log io.Writer
}

// Process is a running swtpm.
type Process struct {
	cmd      *exec.Cmd
	dataPort int
	done     chan struct{} // closed when the process has exited
	waitErr  error         // set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// Available reports whether the swtpm binary is on PATH.
func Available() error {
	if _, err := exec.LookPath(Binary); err != nil {
		return fmt.Errorf("swtpm not available: %w", err)
	}
	return nil
}

// Start runs `swtpm socket --tpm2` with its data channel on a free loopback
// port P and its control channel on P+1, and returns once the data channel
// accepts connections and the TPM runs. The TPM has received
// TPM2_Startup(CLEAR), so it is ready for commands, as after a boot; a new
// state directory gets a newly manufactured TPM (new EK), an existing one
// keeps its seeds. The swtpm process is Linux-only in the way it is tied to
// ours (it gets SIGTERM if we die without Stop).
//
// ctx bounds the start only; the process runs until Stop. If swtpm does not
// come up (for instance because another program took a port between our
// check and swtpm's bind), Start tries again on other ports, a few times.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("start swtpm: no state directory")
	}
	if fi, err := os.Stat(cfg.StateDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("start swtpm: state directory %q: not a directory (%v)", cfg.StateDir, err)
	}
	if err := Available(); err != nil {
		return nil, fmt.Errorf("start swtpm: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var errs []error
	for range startAttempts {
		p, err := start(ctx, cfg)
		if err == nil {
			return p, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("start swtpm: %w", errors.Join(errs...))
}

// start makes one attempt on a fresh pair of ports.
func start(ctx context.Context, cfg Config) (*Process, error) {
	port, err := freePortPair()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(Binary, "socket", "--tpm2",
		"--server", "type=tcp,port="+strconv.Itoa(port)+",bindaddr=127.0.0.1",
		"--ctrl", "type=tcp,port="+strconv.Itoa(port+1)+",bindaddr=127.0.0.1",
		"--tpmstate", "dir="+cfg.StateDir,
		"--flags", "not-need-init,startup-clear",
	)
	// swtpm explains a failed start on stderr; keep the end of it for the error.
	stderr := &tail{max: 2 << 10}
	cmd.Stderr = stderr
	if cfg.Log != nil {
		cmd.Stdout, cmd.Stderr = cfg.Log, io.MultiWriter(cfg.Log, stderr)
	}
	// If this process dies without Stop, the kernel ends swtpm too. (Strictly,
	// when the OS thread that started it exits; Go keeps its threads unless
	// a goroutine exits while locked to one, which this package never does.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", Binary, err)
	}
	p := &Process{cmd: cmd, dataPort: port, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := p.waitReady(ctx); err != nil {
		p.kill()
		return nil, fmt.Errorf("swtpm on ports %d/%d: %w (stderr: %q)", port, port+1, err, stderr.String())
	}
	return p, nil
}

// waitReady waits until the data channel accepts a connection, the process
// exits, or ctx ends, retrying the dial with a short backoff. swtpm binds its
// sockets before it initializes the TPM, and exits if that fails, so an
// accepted connection is not enough: a control command that needs a running
// TPM (CMD_GET_TPMESTABLISHED) must succeed too.
func (p *Process) waitReady(ctx context.Context) error {
	backoff := time.Millisecond
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "tcp", p.DataAddr())
		if err == nil {
			conn.Close()
			if err := p.ctrl(cmdGetTPMEstablished, nil, 8); err != nil {
				return fmt.Errorf("TPM not running: %w", err)
			}
			return nil
		}
		timer := time.NewTimer(backoff)
		select {
		case <-p.done:
			timer.Stop()
			return fmt.Errorf("exited before it was ready: %v", p.waitErr)
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("not ready: %w (last dial: %v)", ctx.Err(), err)
		case <-timer.C:
		}
		backoff = min(2*backoff, 50*time.Millisecond)
	}
}

// freePortPair returns a port P such that P and P+1 were both free on
// 127.0.0.1 a moment ago. Another process may still take them before swtpm
// binds; Start then retries.
func freePortPair() (int, error) {
	for range 20 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("pick a loopback port: %w", err)
		}
		port := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		l1.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return port, nil
	}
	return 0, errors.New("pick a loopback port: no free pair of adjacent ports")
}

// Addr is the address for tpm.Open: "swtpm://127.0.0.1:PORT".
func (p *Process) Addr() string { return "swtpm://" + p.DataAddr() }

// DataAddr is the data channel's host:port.
func (p *Process) DataAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.dataPort)) }

// CtrlAddr is the control channel's host:port.
func (p *Process) CtrlAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.dataPort+1)) }

// Stop asks swtpm to shut down over the control channel (CMD_SHUTDOWN, which
// saves the TPM's state) and waits for it to exit; if it does not exit in
// time, or the shutdown command fails, Stop kills it. Later calls return the
// first call's result.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() {
		if err := p.ctrl(cmdShutdown, nil, 4); err != nil {
			p.kill()
			p.stopErr = fmt.Errorf("stop swtpm: shutdown over control channel: %w (killed)", err)
			return
		}
		timer := time.NewTimer(stopTimeout)
		defer timer.Stop()
		select {
		case <-p.done:
			if p.waitErr != nil {
				p.stopErr = fmt.Errorf("stop swtpm: %w", p.waitErr)
			}
		case <-timer.C:
			p.kill()
			p.stopErr = fmt.Errorf("stop swtpm: still running %v after shutdown (killed)", stopTimeout)
		}
	})
	return p.stopErr
}

// kill ends the process and waits for it.
func (p *Process) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill() // an error means it has exited already
	<-p.done
}

// tail keeps the last max bytes written to it. It is written by exec's copying
// goroutine and read only after the process has exited.
type tail struct {
	max int
	mu  sync.Mutex // guards b
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
