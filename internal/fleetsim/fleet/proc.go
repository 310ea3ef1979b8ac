package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"trustpool/internal/api"
	"trustpool/internal/fleetsim"
	"trustpool/internal/httpjson"
)

// A fleet spread over processes, so that one process's open-file limit
// does not bound it: `trustpool bench fleet` starts simulator processes
// (`trustpool bench fleet-sim`), each serving a Fleet of one slice of the
// nodes (Config.First) with Serve, and drives each through a Proc. The
// parent writes a request as one JSON line on the process's standard
// input; the process answers with one reply line on its standard output,
// after interim progress lines while it enrolls or says hello from every
// node; it logs to standard error. The first request starts the fleet; the
// end of the input closes it and ends the process. Both sides decode
// strictly: a line that does not decode ends the exchange.

// ProcConfig is what a simulator process makes its fleet from: the first
// request.
type ProcConfig struct {
	Server   string `json:"server"`    // https://host:port of the attestation server
	ServerCA string `json:"server_ca"` // PEM
	// AdminToken is the server's admin token: the process mints its nodes'
	// join tokens itself (AdminJoinTokens), as the operator would.
	AdminToken string `json:"admin_token"`
	First      int    `json:"first"` // the slice's first node in the whole fleet
	Nodes      int    `json:"nodes"`
	AK         string `json:"ak"` // a fleetsim.Alg's name (RSA-2048, RSA-2048-PSS, P-256)
	// KeyCache, when set, is read only (Config.SharedKeyCache): the parent
	// fills it before it starts the processes (fleetsim.FillRSAKeys).
	KeyCache string `json:"key_cache,omitempty"`
	Workers  int    `json:"workers"`
	Mode     string `json:"mode"`
}

// The requests' operations.
const (
	opStart   = "start"   // make the fleet (New) from Start: the reply names its nodes, and says whether they keep alive
	opEnroll  = "enroll"  // Enroll
	opHello   = "hello"   // Hello from every node, or from Nodes (all at once)
	opReboot  = "reboot"  // Reboot Nodes with Hypervisor
	opReset   = "reset"   // ResetSamples
	opSamples = "samples" // Samples
)

type procRequest struct {
	Op         string      `json:"op"`
	Start      *ProcConfig `json:"start,omitempty"`
	Nodes      []string    `json:"nodes,omitempty"`
	Hypervisor string      `json:"hypervisor,omitempty"`
}

// procReply is a reply, or, with Progress, an interim line before it.
type procReply struct {
	Progress *procProgress `json:"progress,omitempty"`
	// Error says the operation failed, or in part (enroll, hello).
	Error     string            `json:"error,omitempty"`
	Names     []string          `json:"names,omitempty"`
	KeepAlive bool              `json:"keep_alive,omitempty"`
	Enrolled  int               `json:"enrolled,omitempty"`
	Failed    map[string]string `json:"failed,omitempty"` // hello from Nodes: the nodes whose hello failed, and why
	Samples   *Samples          `json:"samples,omitempty"`
}

type procProgress struct {
	Stage string `json:"stage"`
	Done  int    `json:"done"` // of the process's nodes
}

// Line limits: a request names a few nodes at most; a reply may carry a
// million samples of each kind (maxSamples).
const (
	maxRequest = 1 << 20
	maxReply   = 128 << 20
)

// Serve is a simulator process: it answers the requests read from in on
// out until in ends, then closes its fleet. It returns an error when a
// request does not decode or a reply cannot be written.
func Serve(ctx context.Context, in io.Reader, out io.Writer, log *slog.Logger) error {
	s := &procServer{out: bufio.NewWriter(out), log: log, sent: map[string]time.Time{}}
	defer func() {
		if s.fleet != nil {
			s.fleet.Close()
		}
	}()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxRequest)
	for sc.Scan() {
		var req procRequest
		if err := httpjson.DecodeStrict(sc.Bytes(), &req); err != nil {
			return fmt.Errorf("fleet-sim: request: %w", err)
		}
		rep, err := s.handle(ctx, &req)
		if err != nil {
			rep = procReply{Error: err.Error()}
		}
		if err := s.write(&rep); err != nil {
			return err
		}
	}
	return sc.Err()
}

type procServer struct {
	log   *slog.Logger
	fleet *Fleet
	mu    sync.Mutex // guards out and sent: progress is written from the fleet's workers
	out   *bufio.Writer
	sent  map[string]time.Time // when each stage's progress was last written
}

func (s *procServer) write(rep *procReply) error {
	b, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.out.Write(append(b, '\n'))
	return s.out.Flush()
}

// progress writes a stage's progress at most every 100 ms, and at its end.
func (s *procServer) progress(stage string, done, total int) {
	s.mu.Lock()
	now := time.Now()
	if done < total && now.Sub(s.sent[stage]) < 100*time.Millisecond {
		s.mu.Unlock()
		return
	}
	s.sent[stage] = now
	s.mu.Unlock()
	if err := s.write(&procReply{Progress: &procProgress{Stage: stage, Done: done}}); err != nil {
		s.log.Warn("fleet-sim: write progress", "err", err)
	}
}

func (s *procServer) handle(ctx context.Context, req *procRequest) (procReply, error) {
	if req.Op == opStart {
		return s.start(req.Start)
	}
	f := s.fleet
	if f == nil {
		return procReply{}, fmt.Errorf("%s: the fleet is not started", req.Op)
	}
	switch req.Op {
	case opEnroll:
		n, err := f.Enroll(ctx)
		return procReply{Enrolled: n, Error: errText(err)}, nil
	case opHello:
		if len(req.Nodes) == 0 {
			return procReply{Error: errText(f.Hello(ctx))}, nil
		}
		nodes, err := s.lookup(req.Nodes)
		if err != nil {
			return procReply{}, err
		}
		var mu sync.Mutex // guards failed
		failed := map[string]string{}
		var wg sync.WaitGroup
		for _, nd := range nodes {
			wg.Go(func() {
				if err := nd.Hello(ctx); err != nil {
					mu.Lock()
					failed[nd.Name] = err.Error()
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return procReply{Failed: failed}, nil
	case opReboot:
		nodes, err := s.lookup(req.Nodes)
		if err != nil {
			return procReply{}, err
		}
		if req.Hypervisor == "" {
			return procReply{}, errors.New("reboot: no hypervisor")
		}
		for _, nd := range nodes {
			if err := f.Reboot(nd, req.Hypervisor); err != nil {
				return procReply{}, err
			}
		}
		return procReply{}, nil
	case opReset:
		f.ResetSamples()
		return procReply{}, nil
	case opSamples:
		smp := f.Samples()
		return procReply{Samples: &smp}, nil
	}
	return procReply{}, fmt.Errorf("unknown operation %q", req.Op)
}

func (s *procServer) start(cfg *ProcConfig) (procReply, error) {
	if s.fleet != nil {
		return procReply{}, errors.New("start: the fleet is started already")
	}
	if cfg == nil {
		return procReply{}, errors.New("start: no configuration")
	}
	ak, err := parseAlg(cfg.AK)
	if err != nil {
		return procReply{}, err
	}
	if cfg.AdminToken == "" {
		return procReply{}, errors.New("start: no admin token")
	}
	keepAlive, err := RaiseFileLimit(cfg.Nodes, cfg.Mode)
	if err != nil {
		return procReply{}, err
	}
	admin := api.NewClient(cfg.Server, []byte(cfg.ServerCA), cfg.AdminToken)
	f, err := New(Config{
		Server: cfg.Server, ServerCA: []byte(cfg.ServerCA), Nodes: cfg.Nodes, First: cfg.First, AK: ak,
		KeyCache: cfg.KeyCache, SharedKeyCache: true, JoinToken: AdminJoinTokens(admin), Workers: cfg.Workers,
		NoKeepAlive: !keepAlive, Mode: cfg.Mode, Progress: s.progress, Log: s.log,
	})
	if err != nil {
		return procReply{}, err
	}
	s.fleet = f
	rep := procReply{KeepAlive: keepAlive}
	for _, nd := range f.Nodes() {
		rep.Names = append(rep.Names, nd.Name)
	}
	s.log.Info("fleet-sim: started", "first", cfg.First, "nodes", cfg.Nodes, "keep_alive", keepAlive)
	return rep, nil
}

func (s *procServer) lookup(names []string) ([]*Node, error) {
	var out []*Node
	for _, n := range names {
		nd := s.fleet.Node(n)
		if nd == nil {
			return nil, fmt.Errorf("no node %q in this process", n)
		}
		out = append(out, nd)
	}
	return out, nil
}

func parseAlg(s string) (fleetsim.Alg, error) {
	for _, a := range []fleetsim.Alg{fleetsim.RSA2048, fleetsim.RSA2048PSS, fleetsim.P256} {
		if a.String() == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("start: AK %q: want RSA-2048, RSA-2048-PSS or P-256", s)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Proc is a simulator process, seen from its parent. Its methods send one
// request at a time.
type Proc struct {
	cmd       *exec.Cmd
	in        io.WriteCloser
	lines     chan []byte   // the process's output lines; closed at its end
	exited    chan struct{} // closed once the process has been waited for
	logFile   *os.File
	progress  func(stage string, done int)
	mu        sync.Mutex // serializes requests
	names     []string
	keepAlive bool
	readErr   error // why the output ended early (read once lines is closed)
}

// ProcOptions says how a simulator process is started.
type ProcOptions struct {
	// Exe and Args are the command that runs Serve (trustpool bench
	// fleet-sim).
	Exe  string
	Args []string
	Log  string // the file its standard error goes to
	// Progress, when set, is told how many of the process's nodes have
	// enrolled ("enrolled") or said hello ("said hello").
	Progress func(stage string, done int)
}

// StartProc starts a simulator process and its fleet. The process dies
// with its parent (SIGKILL).
func StartProc(ctx context.Context, opt ProcOptions, cfg ProcConfig) (*Proc, error) {
	logf, err := os.Create(opt.Log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(opt.Exe, opt.Args...)
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err1 := cmd.StdinPipe()
	out, err2 := cmd.StdoutPipe()
	if err := errors.Join(err1, err2); err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start a simulator process: %w", err)
	}
	p := &Proc{cmd: cmd, in: in, lines: make(chan []byte, 64), exited: make(chan struct{}), logFile: logf, progress: opt.Progress}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), maxReply)
		for sc.Scan() {
			p.lines <- append([]byte(nil), sc.Bytes()...)
		}
		p.readErr = sc.Err()
		close(p.lines)
		io.Copy(io.Discard, out) // a line over the limit: let the process go on to its end
		cmd.Wait()
		close(p.exited)
	}()
	rep, err := p.call(ctx, &procRequest{Op: opStart, Start: &cfg})
	if err == nil && rep.Error != "" {
		err = errors.New(rep.Error)
	}
	if err == nil && len(rep.Names) != cfg.Nodes {
		err = fmt.Errorf("%d nodes started, want %d", len(rep.Names), cfg.Nodes)
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("simulator process for nodes %d to %d: %w", cfg.First+1, cfg.First+cfg.Nodes, err)
	}
	p.names, p.keepAlive = rep.Names, rep.KeepAlive
	return p, nil
}

// call sends req and returns its reply, passing progress lines on. When
// ctx ends first the process is killed: its fleet is in an unknown state.
func (p *Proc) call(ctx context.Context, req *procRequest) (*procReply, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", req.Op, err, p.Tail())
	}
	for {
		var line []byte
		var ok bool
		select {
		case line, ok = <-p.lines:
		case <-ctx.Done():
			p.cmd.Process.Kill()
			return nil, ctx.Err()
		}
		if !ok {
			return nil, fmt.Errorf("%s: the simulator process ended (%v): %s", req.Op, p.readErr, p.Tail())
		}
		var rep procReply
		if err := httpjson.DecodeStrict(line, &rep); err != nil {
			p.cmd.Process.Kill()
			return nil, fmt.Errorf("%s: reply: %w", req.Op, err)
		}
		if rep.Progress == nil {
			return &rep, nil
		}
		if p.progress != nil {
			p.progress(rep.Progress.Stage, rep.Progress.Done)
		}
	}
}

// Names returns the process's nodes, in order.
func (p *Proc) Names() []string { return p.names }

// KeepAlive reports whether the process's pull nodes keep the server's
// connections alive (its open-file limit holds two files per node).
func (p *Proc) KeepAlive() bool { return p.keepAlive }

// Pid returns the process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Enroll enrolls the process's nodes (Fleet.Enroll).
func (p *Proc) Enroll(ctx context.Context) (int, error) {
	rep, err := p.call(ctx, &procRequest{Op: opEnroll})
	if err != nil {
		return 0, err
	}
	return rep.Enrolled, textErr(rep.Error)
}

// Hello has every node of the process say hello (Fleet.Hello).
func (p *Proc) Hello(ctx context.Context) error {
	rep, err := p.call(ctx, &procRequest{Op: opHello})
	if err != nil {
		return err
	}
	return textErr(rep.Error)
}

// HelloNodes has the named nodes say hello, all at once, and returns
// those whose hello failed with their error.
func (p *Proc) HelloNodes(ctx context.Context, names []string) (map[string]string, error) {
	rep, err := p.call(ctx, &procRequest{Op: opHello, Nodes: names})
	if err != nil {
		return nil, err
	}
	return rep.Failed, textErr(rep.Error)
}

// Reboot reboots the named nodes with hypervisor (Fleet.Reboot).
func (p *Proc) Reboot(ctx context.Context, names []string, hypervisor string) error {
	rep, err := p.call(ctx, &procRequest{Op: opReboot, Nodes: names, Hypervisor: hypervisor})
	if err != nil {
		return err
	}
	return textErr(rep.Error)
}

// ResetSamples drops the process's latency samples (Fleet.ResetSamples).
func (p *Proc) ResetSamples(ctx context.Context) error {
	rep, err := p.call(ctx, &procRequest{Op: opReset})
	if err != nil {
		return err
	}
	return textErr(rep.Error)
}

// Samples returns the process's counts and samples (Fleet.Samples).
func (p *Proc) Samples(ctx context.Context) (Samples, error) {
	rep, err := p.call(ctx, &procRequest{Op: opSamples})
	if err != nil {
		return Samples{}, err
	}
	if rep.Samples == nil {
		return Samples{}, errors.New("samples: " + rep.Error)
	}
	return *rep.Samples, nil
}

// Close ends the process's input, so that it closes its fleet and exits;
// it is killed when it has not within 10 s.
func (p *Proc) Close() error {
	p.in.Close()
	go func() {
		for range p.lines { // lines nobody asked for: let the reader reach the end
		}
	}()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
	return p.logFile.Close()
}

// Tail is the end of the process's log.
func (p *Proc) Tail() string {
	b, _ := os.ReadFile(p.logFile.Name())
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func textErr(s string) error {
	if s == "" {
		return nil
	}
	return errors.New(s)
}
