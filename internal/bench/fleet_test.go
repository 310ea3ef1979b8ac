package bench

import (
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"trustpool/internal/fleetsim"
)

// TestFleet is the fleet check: a real server process and 200 simulated
// nodes in two simulator processes for about two intervals of 5 s, two of
// them (both in the second process) rebooting into a tampered hypervisor.
// It asserts correctness only (every node enrolled and fresh, each at the
// level it booted, the simulator's CPU read from its processes), never
// timings.
func TestFleet(t *testing.T) { fleetCheck(t, "pull", 2) }

// TestFleetPush is the fleet check in push mode: the 200 nodes, in as few
// simulator processes as the open-file limit allows (one), open no port,
// enroll in push mode and push their evidence (challenge, evidence,
// long-poll until next_in); the tampered ones push at once after their
// reboot.
func TestFleetPush(t *testing.T) { fleetCheck(t, "push", 0) }

func fleetCheck(t *testing.T, mode string, procs int) {
	if testing.Short() {
		t.Skip("starts a server process and 200 simulated nodes")
	}
	exe := filepath.Join(t.TempDir(), "trustpool")
	if out, err := exec.Command("go", "build", "-o", exe, "trustpool/cmd/trustpool").CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("build the trustpool binary: %v\n%s", err, out)
		}
		t.Skipf("cannot build the trustpool binary: %v\n%s", err, out)
	}
	var pr progressLog
	res, err := RunFleet(t.Context(), FleetConfig{
		Nodes: 200, Interval: 5 * time.Second, Duration: 12 * time.Second, Tampered: 2, Mode: mode, SimProcs: procs,
		AK: fleetsim.P256, KeyCache: filepath.Join(t.TempDir(), "rsa2048.pem"), Exe: exe, Dir: t.TempDir(), Workers: 8, Progress: pr.report,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Progress was reported through every long stage, to its end.
	pr.want(t, map[string][2]int{"enrolled": {200, 200}, "said hello": {200, 200}, "attested": {200, 200}, "measured s": {12, 12}})
	t.Logf("%+v", *res)
	if res.Mode != mode {
		t.Errorf("mode %q, want %q", res.Mode, mode)
	}
	if want := max(procs, 1); res.SimProcs != want || !res.KeepAlive {
		t.Errorf("%d simulator processes, keep-alive %v; want %d and true", res.SimProcs, res.KeepAlive, want)
	}
	// The simulator's CPU is its processes' (/proc/PID/stat): 400
	// attestations at least cost more than a clock tick.
	if res.SimCPUS <= 0 {
		t.Errorf("sim_cpu_s %v, want the simulator processes' CPU", res.SimCPUS)
	}
	if res.ServerFiles <= 0 || res.ServerFileLimit < res.ServerFiles {
		t.Errorf("the server holds %d open files of its limit %d", res.ServerFiles, res.ServerFileLimit)
	}
	if res.Enrolled != 200 {
		t.Errorf("enrolled %d of 200 nodes (%v)", res.Enrolled, res.Notes)
	}
	if res.UnknownAtEnd != 0 || res.FreshAtEnd != 200 {
		t.Errorf("at the end %d hosts are unknown and %d fresh, want 0 and 200", res.UnknownAtEnd, res.FreshAtEnd)
	}
	if res.UntrustedAtEnd != 2 || res.WrongAtEnd != 0 {
		t.Errorf("at the end %d hosts are untrusted and %d not at the level they booted, want the 2 tampered ones and 0", res.UntrustedAtEnd, res.WrongAtEnd)
	}
	if res.TamperToUntrusted.N != 2 || res.TamperMissed != 0 {
		t.Errorf("PollHosts said untrusted for %d of the 2 tampered nodes after their hello", res.TamperToUntrusted.N)
	}
	if res.Attestations < 200 || res.ChallengesRefused != 0 {
		t.Errorf("the fleet answered %d challenges and refused %d, want at least one per node and none refused", res.Attestations, res.ChallengesRefused)
	}
}

// TestFleetReplicas is the replica check: three server processes on a
// throw-away PostgreSQL sharing one CA, 400 simulated nodes at an interval
// of 10 s with leases of 3 s, replica 2 killed with SIGKILL in the window.
// It asserts correctness only, never timings: every node enrolled and
// fresh at the end, every host held again after the kill, no verdict gone
// unknown after it and none older than two intervals (lost_verdicts: a
// replica schedules a host it takes over an interval after its last
// verdict), a known-good change on replica 1 listed on replica 3.
func TestFleetReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, three server processes and 400 simulated nodes")
	}
	ci := os.Getenv("CI") == "true"
	exe := filepath.Join(t.TempDir(), "trustpool")
	if out, err := exec.Command("go", "build", "-o", exe, "trustpool/cmd/trustpool").CombinedOutput(); err != nil {
		if ci {
			t.Fatalf("build the trustpool binary: %v\n%s", err, out)
		}
		t.Skipf("cannot build the trustpool binary: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(pgBin, "initdb")); err != nil {
		if ci {
			t.Fatalf("CI needs PostgreSQL 15 for the replica check: %v", err)
		}
		t.Skipf("no PostgreSQL 15: %v", err)
	}
	const nodes = 400
	res, err := RunFleet(t.Context(), FleetConfig{
		// An interval of 10 s leaves a lease (3 s), a claim round and an
		// attestation room inside two intervals on a loaded machine.
		Nodes: nodes, Interval: 10 * time.Second, Duration: 30 * time.Second, Tampered: 2, DB: "postgres",
		Replicas: 3, KillReplicaAfter: 8 * time.Second, LeaseTime: 3 * time.Second,
		AK: fleetsim.P256, Exe: exe, Dir: t.TempDir(), Workers: 8,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	t.Logf("%s", b)
	if res.Enrolled != nodes {
		t.Errorf("enrolled %d of %d nodes (%v)", res.Enrolled, nodes, res.Notes)
	}
	if res.UnknownAtEnd != 0 || res.FreshAtEnd != nodes || res.WrongAtEnd != 0 {
		t.Errorf("at the end %d hosts are unknown, %d fresh and %d not at the level they booted, want 0, %d and 0", res.UnknownAtEnd, res.FreshAtEnd, res.WrongAtEnd, nodes)
	}
	if res.ReplicaKilled != "replica-2" {
		t.Errorf("replica killed: %q, want replica-2 (%v)", res.ReplicaKilled, res.Notes)
	}
	if res.HeldAfterKill == nil || !*res.HeldAfterKill || res.ReclaimedWithinS == nil {
		t.Errorf("after the kill the lease census never showed every host held by the survivors (%v)", res.Notes)
	}
	if res.LostSamples == 0 || res.UnknownAfterKill == nil || *res.UnknownAfterKill != 0 || res.LostVerdicts == nil || *res.LostVerdicts != 0 {
		t.Errorf("after the kill %v hosts read unknown and %v had a verdict older than two intervals on a survivor in %d reads, want 0 and 0 in at least one",
			res.UnknownAfterKill, res.LostVerdicts, res.LostSamples)
	}
	if res.KnownGoodPropagationMs == nil {
		t.Errorf("the known-good change on replica 1 was not listed on replica 3 (%v)", res.Notes)
	}
	if res.TamperToUntrusted.N != 2 || res.TamperMissed != 0 || res.ChallengesRefused != 0 {
		t.Errorf("PollHosts said untrusted for %d of the 2 tampered nodes; %d challenges refused", res.TamperToUntrusted.N, res.ChallengesRefused)
	}
}

// progressLog records the furthest progress reported in each stage.
type progressLog struct {
	mu   sync.Mutex // guards last
	last map[string][2]int
}

func (p *progressLog) report(stage string, done, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		p.last = map[string][2]int{}
	}
	if done >= p.last[stage][0] {
		p.last[stage] = [2]int{done, total}
	}
}

// want checks that each stage reached its done of total and no other
// stage was reported.
func (p *progressLog) want(t *testing.T, want map[string][2]int) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !maps.Equal(p.last, want) {
		t.Errorf("progress reached %v, want %v", p.last, want)
	}
}

// TestRunProgress runs trustpool bench's measurements briefly and small:
// every figure is measured and reported as progress, seven of seven.
func TestRunProgress(t *testing.T) {
	if testing.Short() {
		t.Skip("measures every figure")
	}
	var pr progressLog
	r, err := Run(t.Context(), Config{Duration: 50 * time.Millisecond, Hosts: 300, Dir: t.TempDir(), Progress: pr.report})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Verify) != 2 || len(r.PollHosts) != 2 || r.PollHosts[1].Names != 300 || r.Verify[0].HostsPS <= 0 || r.ReevaluatedHosts != 300 {
		t.Errorf("results: %+v", r)
	}
	// 300 hosts: both PollHosts figures are of 300 names, one stage.
	pr.want(t, map[string][2]int{
		"measuring verification RSA-2048, figure": {0, 7}, "measuring verification P-256, figure": {1, 7},
		"measuring PollHosts of 300 names, figure": {3, 7}, "measuring filter, figure": {4, 7},
		"measuring restart, figure": {5, 7}, "measuring re-evaluation, figure": {6, 7}, "measuring, figure": {7, 7},
	})
}

// TestSimProcs: --sim-procs is taken as given within 1 to --nodes, and 0
// spreads the fleet over as few processes as hold two files per pull node
// (one per push node) under the hard open-file limit.
func TestSimProcs(t *testing.T) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatal(err)
	}
	per := (int(min(l.Max, 1<<24)) - 2048) / 2
	for _, c := range []struct {
		nodes, procs int
		mode         string
		want         int // 0: an error
	}{
		{nodes: 10, procs: 3, mode: "pull", want: 3},
		{nodes: 10, procs: 11, mode: "pull"},
		{nodes: 10, procs: -1, mode: "pull"},
		{nodes: 10, mode: "pull", want: 1},
		{nodes: per, mode: "pull", want: 1},
		{nodes: per + 1, mode: "pull", want: 2},
		{nodes: 2*per + 1, mode: "pull", want: 3},
		{nodes: per + 1, mode: "push", want: 1},
	} {
		got, err := simProcs(FleetConfig{Nodes: c.nodes, SimProcs: c.procs, Mode: c.mode})
		if c.want == 0 && err == nil || c.want != 0 && (err != nil || got != c.want) {
			t.Errorf("%d %s nodes, --sim-procs %d: %d processes (%v), want %d", c.nodes, c.mode, c.procs, got, err, c.want)
		}
	}
}

// TestFleetConfigRefused: a configuration the bench cannot run is refused
// before anything starts, with the flag it is about.
func TestFleetConfigRefused(t *testing.T) {
	ok := FleetConfig{Nodes: 10, Interval: time.Second, Duration: time.Second}
	for _, tc := range []struct {
		edit func(*FleetConfig)
		want string
	}{
		{func(c *FleetConfig) { c.Nodes = 0 }, "--nodes"},
		{func(c *FleetConfig) { c.Tampered = 10 }, "--tampered 10"},
		{func(c *FleetConfig) { c.Replicas = 3 }, "--replicas 3 needs --db"},
		{func(c *FleetConfig) { c.AgentConns = -2 }, "--agent-conns -2"},
		{func(c *FleetConfig) { c.Mode = "poll" }, "--mode"},
	} {
		cfg := ok
		tc.edit(&cfg)
		if _, err := RunFleet(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("RunFleet(%+v) = %v, want an error naming %q", cfg, err, tc.want)
		}
	}
}
