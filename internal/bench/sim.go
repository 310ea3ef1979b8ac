package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"trustpool/internal/fleetsim"
	simfleet "trustpool/internal/fleetsim/fleet"
)

// simulator is the simulated fleet: simulator processes (`trustpool bench
// fleet-sim`), each a contiguous slice of the nodes, so that no process's
// open-file limit bounds the fleet or forbids keeping connections alive.
type simulator struct {
	procs []*simfleet.Proc
	names []string                  // every node, in order
	owner map[string]*simfleet.Proc // node name → its process

	mu   sync.Mutex // guards done
	done map[string][]int
}

// simProcs returns how many simulator processes cfg's fleet takes: want,
// or (0) as few as hold two files per pull node (one per push node) under
// the open-file limit.
func simProcs(cfg FleetConfig) (int, error) {
	if cfg.SimProcs < 0 || cfg.SimProcs > cfg.Nodes {
		return 0, fmt.Errorf("bench fleet: --sim-procs %d: want 0 (automatic) to %d", cfg.SimProcs, cfg.Nodes)
	}
	if cfg.SimProcs > 0 {
		return cfg.SimProcs, nil
	}
	per, err := simfleet.NodesPerProcess(cfg.Mode)
	if err != nil {
		return 0, err
	}
	return (cfg.Nodes + per - 1) / per, nil
}

// startSimulator fills the RSA key cache once (the processes only read
// their slices of it), then starts n simulator processes against srv.
func startSimulator(ctx context.Context, cfg FleetConfig, srv *serverProc, n int) (*simulator, error) {
	if cfg.KeyCache != "" {
		if err := fleetsim.FillRSAKeys(simfleet.KeysPerNode(cfg.AK)*cfg.Nodes, cfg.KeyCache); err != nil {
			return nil, fmt.Errorf("bench fleet: %w", err)
		}
	}
	s := &simulator{procs: make([]*simfleet.Proc, n), owner: map[string]*simfleet.Proc{}, done: map[string][]int{}}
	workers := max(1, (cfg.Workers+n-1)/n) // the flag's concurrency for the whole fleet
	if cfg.Workers <= 0 {
		workers = 0 // the fleet's default
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	first := 0
	for i := range n {
		size := cfg.Nodes / n
		if i < cfg.Nodes%n {
			size++
		}
		pc := simfleet.ProcConfig{Server: srv.url, ServerCA: string(srv.ca), AdminToken: srv.adminToken, First: first, Nodes: size,
			AK: cfg.AK.String(), KeyCache: cfg.KeyCache, Workers: workers, Mode: cfg.Mode}
		first += size
		opt := simfleet.ProcOptions{Exe: cfg.Exe, Args: []string{"bench", "fleet-sim"}, Log: filepath.Join(cfg.Dir, fmt.Sprintf("sim-%d.log", i+1))}
		if cfg.Progress != nil {
			opt.Progress = func(stage string, done int) { s.progress(cfg.Progress, i, n, cfg.Nodes, stage, done) }
		}
		wg.Go(func() { s.procs[i], errs[i] = simfleet.StartProc(ctx, opt, pc) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.Close()
		return nil, fmt.Errorf("bench fleet: %w", err)
	}
	for _, p := range s.procs {
		for _, name := range p.Names() {
			s.names = append(s.names, name)
			s.owner[name] = p
		}
	}
	return s, nil
}

// progress reports a stage's progress summed over the processes.
func (s *simulator) progress(report func(string, int, int), i, n, total int, stage string, done int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done[stage] == nil {
		s.done[stage] = make([]int, n)
	}
	s.done[stage][i] = done
	sum := 0
	for _, d := range s.done[stage] {
		sum += d
	}
	report(stage, sum, total)
}

// each runs fn on every process at once and joins their errors.
func (s *simulator) each(fn func(*simfleet.Proc) error) error {
	errs := make([]error, len(s.procs))
	var wg sync.WaitGroup
	for i, p := range s.procs {
		wg.Go(func() { errs[i] = fn(p) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Names returns every node's name, in order.
func (s *simulator) Names() []string { return s.names }

// KeepAlive reports whether every process's nodes keep the server's
// connections alive.
func (s *simulator) KeepAlive() bool {
	for _, p := range s.procs {
		if !p.KeepAlive() {
			return false
		}
	}
	return true
}

// Enroll enrolls every node and returns how many are.
func (s *simulator) Enroll(ctx context.Context) (int, error) {
	var mu sync.Mutex // guards n
	n := 0
	err := s.each(func(p *simfleet.Proc) error {
		k, err := p.Enroll(ctx)
		mu.Lock()
		n += k
		mu.Unlock()
		return err
	})
	return n, err
}

// Hello has every node say hello.
func (s *simulator) Hello(ctx context.Context) error {
	return s.each(func(p *simfleet.Proc) error { return p.Hello(ctx) })
}

// byOwner groups names by their process; a name of no process is an error.
func (s *simulator) byOwner(names []string) (map[*simfleet.Proc][]string, error) {
	out := map[*simfleet.Proc][]string{}
	for _, n := range names {
		p := s.owner[n]
		if p == nil {
			return nil, fmt.Errorf("no simulated node %q", n)
		}
		out[p] = append(out[p], n)
	}
	return out, nil
}

// HelloNodes has the named nodes say hello, all at once, and returns those
// whose hello failed, with their error.
func (s *simulator) HelloNodes(ctx context.Context, names []string) (map[string]string, error) {
	groups, err := s.byOwner(names)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex // guards failed
	failed := map[string]string{}
	err = s.each(func(p *simfleet.Proc) error {
		if len(groups[p]) == 0 {
			return nil
		}
		f, err := p.HelloNodes(ctx, groups[p])
		mu.Lock()
		defer mu.Unlock()
		for n, e := range f {
			failed[n] = e
		}
		if err != nil {
			for _, n := range groups[p] {
				failed[n] = err.Error()
			}
		}
		return err
	})
	return failed, err
}

// Reboot reboots the named nodes with hypervisor in their measured launch.
func (s *simulator) Reboot(ctx context.Context, names []string, hypervisor string) error {
	groups, err := s.byOwner(names)
	if err != nil {
		return err
	}
	return s.each(func(p *simfleet.Proc) error {
		if len(groups[p]) == 0 {
			return nil
		}
		return p.Reboot(ctx, groups[p], hypervisor)
	})
}

// ResetSamples drops every process's latency samples.
func (s *simulator) ResetSamples(ctx context.Context) error {
	return s.each(func(p *simfleet.Proc) error { return p.ResetSamples(ctx) })
}

// Samples returns the counts and samples of every process, merged.
func (s *simulator) Samples(ctx context.Context) (simfleet.Samples, error) {
	var mu sync.Mutex // guards all
	var all simfleet.Samples
	err := s.each(func(p *simfleet.Proc) error {
		smp, err := p.Samples(ctx)
		mu.Lock()
		all.Add(smp)
		mu.Unlock()
		return err
	})
	return all, err
}

// CPU returns the processes' user + system CPU seconds, summed.
func (s *simulator) CPU() (float64, error) {
	sum := 0.0
	for _, p := range s.procs {
		c, err := procCPU(p.Pid())
		if err != nil {
			return 0, err
		}
		sum += c
	}
	return sum, nil
}

// Close ends every process.
func (s *simulator) Close() {
	var wg sync.WaitGroup
	for _, p := range s.procs {
		if p != nil {
			wg.Go(func() { p.Close() })
		}
	}
	wg.Wait()
}
