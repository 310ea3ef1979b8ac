package bench

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the pgx database/sql driver, for the size of a PostgreSQL store

	"trustpool/internal/api"
	"trustpool/internal/fleetsim"
	simfleet "trustpool/internal/fleetsim/fleet"
	"trustpool/internal/httpjson"
	"trustpool/internal/nova"
	"trustpool/internal/policy"
	"trustpool/internal/server"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// FleetConfig configures `trustpool bench fleet`.
type FleetConfig struct {
	Nodes    int
	Interval time.Duration // the server's re-attestation interval
	Validity time.Duration // how long a verdict stands (default: the server's, 3 × Interval)
	Duration time.Duration // the measured window, after every node is enrolled and attested
	// DB is "" (SQLite in the server's state directory), "postgres" (a
	// throw-away cluster in a temporary directory) or a postgres:// URL.
	DB       string
	Tampered int          // nodes that reboot into a tampered state during the window
	AK       fleetsim.Alg // the nodes' AK kind
	KeyCache string       // RSA key cache file (fleetsim.RSAKeys); "" generates every key
	Exe      string       // the trustpool binary (default: this one)
	Dir      string       // scratch directory
	Workers  int          // concurrent enrollments and hellos over the whole fleet (default 16)
	// SimProcs is the number of simulator processes the fleet is spread
	// over (0: as few as keep two files per pull node, one per push node,
	// under the open-file limit).
	SimProcs int
	// Replicas is the number of server processes sharing the PostgreSQL
	// database and the CA (default 1; more need DB).
	Replicas int
	// KillReplicaAfter, when positive, SIGKILLs replica 2 that long into
	// the window (needs Replicas > 1).
	KillReplicaAfter time.Duration
	LeaseTime        time.Duration // the replicas' --lease-time (default: the server's, 30 s)
	// AgentConns is the servers' --agent-conns: agent connections kept
	// open between challenges (0: the server's default, -1 none).
	AgentConns int
	// Mode is the nodes' agent mode: "pull" (the default) or "push"
	// (docs/push.md: the nodes open no port and push their evidence).
	Mode string
	// Progress, when set, is told how far the long stages are: nodes
	// "enrolled", "said hello", "attested", then seconds "measured".
	Progress func(stage string, done, total int)
	Log      *slog.Logger
}

// Latency is a pair of percentiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
	N   int     `json:"n"`
}

// FleetResult is what `trustpool bench fleet` prints.
type FleetResult struct {
	Nodes      int     `json:"nodes"`
	Mode       string  `json:"mode"` // the nodes' agent mode, pull or push
	IntervalS  float64 `json:"interval_s"`
	ValidityS  float64 `json:"validity_s"`
	DurationS  float64 `json:"duration_s"` // the measured window
	Replicas   int     `json:"replicas"`
	AgentConns int     `json:"agent_conns"` // --agent-conns given to the servers, 0 their default
	DB         string  `json:"db"`
	AK         string  `json:"ak"`
	CPUs       int     `json:"cpus"`
	Tampered   int     `json:"tampered"`
	Enrolled   int     `json:"enrolled"`
	EnrollS    float64 `json:"enroll_s"`     // enrolling every node (join token, enroll, activate)
	RampS      float64 `json:"ramp_s"`       // from the hellos to every node attested
	RampHeld   bool    `json:"ramp_settled"` // every node had a verdict before the window started
	FreshAtEnd int     `json:"fresh_at_end"` // hosts whose verdict is current (trusted or untrusted)
	// UnknownAtEnd are hosts that read unknown at the end (never attested or
	// expired).
	UnknownAtEnd   int `json:"unknown_at_end"`
	TrustedAtEnd   int `json:"trusted_at_end"`
	UntrustedAtEnd int `json:"untrusted_at_end"`
	// WrongAtEnd are hosts whose level is not what they booted: a
	// tampered node not untrusted, or a clean one not trusted.
	WrongAtEnd int `json:"wrong_at_end"`
	// OlderThanInterval are hosts whose verdict at the end is older than
	// the interval plus the challenge timeout: the server fell behind its
	// schedule for them even if their verdict has not expired yet.
	OlderThanInterval int     `json:"older_than_interval_at_end"`
	MaxVerdictAgeS    float64 `json:"max_verdict_age_s"`
	// Attestations are challenges the simulator answered in the window.
	Attestations      int64   `json:"attestations"`
	AttestationsPerS  float64 `json:"attestations_per_s"`
	ExpectedPerS      float64 `json:"expected_attestations_per_s"` // nodes / interval
	ChallengesRefused int64   `json:"challenges_refused"`
	ServerCPUS        float64 `json:"server_cpu_s"`
	ServerCPUPerAtt   float64 `json:"server_cpu_s_per_attestation"`
	DBCPUS            float64 `json:"db_cpu_s,omitempty"` // PostgreSQL's processes, when the bench started them
	// SimCPUS is the simulator processes' CPU, summed; BenchCPUS this
	// process's (PollHosts, the pool and lease readers).
	SimCPUS          float64 `json:"sim_cpu_s"`
	BenchCPUS        float64 `json:"bench_cpu_s"`
	SimProcs         int     `json:"sim_procs"` // simulator processes
	ServerRSS        int64   `json:"server_rss_bytes"`
	ServerRSSPerNode float64 `json:"server_rss_bytes_per_node"`
	// ServerFiles are the files the server (replica 1) holds open at the
	// end of the window, and ServerFileLimit its limit: a kept-alive agent
	// connection is one of them.
	ServerFiles     int `json:"server_open_files"`
	ServerFileLimit int `json:"server_open_file_limit"`
	// AttestLatency is the simulator's answer time (challenge handler
	// start to evidence written); the server's own round trip is not
	// visible from outside it.
	AttestLatency Latency `json:"attest_latency_ms"`
	// ChallengeGap is the time between two challenges to the same node.
	ChallengeGap Latency `json:"challenge_gap_s"`
	// PushRoundTrip, in push mode, is a push timed at the node: its
	// challenge requested to the verdict of its evidence read.
	PushRoundTrip *Latency `json:"push_round_trip_ms,omitempty"`
	// PollHosts1000 is a PollHosts of 1,000 names (all nodes when fewer)
	// timed at the client over loopback HTTPS, once a second in the window.
	PollHosts1000 Latency `json:"pollhosts_1000_ms"`
	PollHostsP99  float64 `json:"pollhosts_1000_p99_ms"`
	// TamperToUntrusted: the tampered nodes' hellos after their reboot
	// (asked of their simulator processes at once) to PollHosts answering
	// untrusted for each (polled every 10 ms).
	TamperToUntrusted Latency `json:"tamper_to_untrusted_ms"`
	TamperMissed      int     `json:"tamper_not_untrusted_within_60s"`
	BytesWritten      int64   `json:"bytes_written"` // growth of the store in the window
	BytesPerAtt       float64 `json:"bytes_written_per_attestation"`
	IOWritePerAtt     float64 `json:"server_io_write_bytes_per_attestation"` // /proc/PID/io write_bytes (SQLite) or the WAL (PostgreSQL)
	// KeepAlive says whether the nodes kept the server's connections open
	// between challenges, as the agent does (false when a simulator
	// process's open-file limit cannot hold two files per node).
	KeepAlive bool `json:"agent_keepalive"`
	// With replicas: LeaseTimeS is their lease time; ReplicaKilled the one
	// killed with SIGKILL; ReclaimedWithinS the time from the kill until the
	// store's lease census shows every active host held by the survivors
	// (absent when it did not within the window); HeldAfterKill whether it
	// did; LostVerdicts the hosts whose verdict read unknown, or older than
	// two intervals, on a surviving replica at any sample after the kill;
	// KnownGoodPropagationMs the time from a new reference PUT on replica 1
	// to GET /v1/references listing it on the last replica (absent when it
	// did not within 30 s).
	LeaseTimeS       float64  `json:"lease_time_s,omitempty"`
	ReplicaKilled    string   `json:"replica_killed,omitempty"`
	ReclaimedWithinS *float64 `json:"reclaimed_within_s,omitempty"`
	HeldAfterKill    *bool    `json:"held_after_kill,omitempty"`
	LostVerdicts     *int     `json:"lost_verdicts,omitempty"`
	LostSamples      int      `json:"lost_verdict_samples,omitempty"` // reads of /v1/hosts after the kill
	// UnknownAfterKill are the hosts among LostVerdicts whose verdict read
	// unknown (or none): lost outright, not only old; MaxAgeAfterKillS is
	// the oldest verdict read after the kill.
	UnknownAfterKill       *int     `json:"unknown_after_kill,omitempty"`
	MaxAgeAfterKillS       float64  `json:"max_verdict_age_after_kill_s,omitempty"`
	KnownGoodPropagationMs *float64 `json:"knowngood_propagation_ms,omitempty"`
	Notes                  []string `json:"notes"`
}

// RunFleet runs the fleet benchmark: a real server process, a simulated
// fleet enrolled through its API, a measured window of cfg.Duration.
func RunFleet(ctx context.Context, cfg FleetConfig) (*FleetResult, error) {
	if cfg.Nodes <= 0 || cfg.Interval <= 0 || cfg.Duration <= 0 {
		return nil, errors.New("bench fleet: --nodes, --interval and --duration must be positive")
	}
	if cfg.Tampered < 0 || cfg.Tampered >= cfg.Nodes {
		return nil, fmt.Errorf("bench fleet: --tampered %d: want 0 to %d", cfg.Tampered, cfg.Nodes-1)
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Replicas > 1 && cfg.DB == "" {
		return nil, fmt.Errorf("bench fleet: --replicas %d needs --db postgres or a postgres:// URL: replicas share one PostgreSQL database", cfg.Replicas)
	}
	if cfg.KillReplicaAfter > 0 && cfg.Replicas < 2 {
		return nil, errors.New("bench fleet: --kill-replica-after needs --replicas 2 or more")
	}
	if cfg.KillReplicaAfter < 0 || cfg.KillReplicaAfter >= cfg.Duration {
		return nil, fmt.Errorf("bench fleet: --kill-replica-after %v: want within the window (--duration %v)", cfg.KillReplicaAfter, cfg.Duration)
	}
	if cfg.LeaseTime < 0 {
		return nil, errors.New("bench fleet: --lease-time must not be negative")
	}
	if cfg.AgentConns < -1 {
		return nil, fmt.Errorf("bench fleet: --agent-conns %d: want 0 (the server's default), -1 (none) or a number of connections", cfg.AgentConns)
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = "pull"
	case "pull", "push":
	default:
		return nil, fmt.Errorf("bench fleet: --mode %q: want pull or push", cfg.Mode)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if cfg.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("bench fleet: find the trustpool binary: %w", err)
		}
		cfg.Exe = exe
	}
	procs, err := simProcs(cfg)
	if err != nil {
		return nil, err
	}
	res := &FleetResult{Nodes: cfg.Nodes, Mode: cfg.Mode, IntervalS: cfg.Interval.Seconds(), DurationS: cfg.Duration.Seconds(), Replicas: cfg.Replicas,
		AK: cfg.AK.String(), CPUs: runtime.NumCPU(), Tampered: cfg.Tampered, DB: "sqlite", SimProcs: procs,
		AgentConns: cfg.AgentConns}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// The store.
	dsn := ""
	var pg *pgCluster
	switch {
	case cfg.DB == "postgres":
		var err error
		if pg, err = startPostgres(ctx, cfg.Dir); err != nil {
			return nil, err
		}
		defer pg.stop()
		dsn, res.DB = pg.dsn, "postgres (throw-away cluster)"
	case strings.HasPrefix(cfg.DB, "postgres://"), strings.HasPrefix(cfg.DB, "postgresql://"):
		dsn, res.DB = cfg.DB, "postgres (given)"
	case cfg.DB != "":
		return nil, fmt.Errorf("bench fleet: --db %q: want postgres or a postgres:// URL", cfg.DB)
	}

	// The servers: replica 1 creates the CA and the bootstrap credentials,
	// the others start from copies of them (docs/replicas.md).
	srvs, err := startReplicas(ctx, cfg, dsn)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range srvs {
			s.stop()
		}
	}()
	srv := srvs[0]
	res.ValidityS = srv.validity.Seconds()
	admin := api.NewClient(srv.url, srv.ca, srv.adminToken)
	// The fleet talks to replica 1; replica 2 is the one killed; the
	// reader (PollHosts, the verdict samples after the kill, the
	// known-good propagation) is the last replica still alive.
	killIdx := -1
	if cfg.KillReplicaAfter > 0 {
		killIdx = 1
	}
	reader := srvs[len(srvs)-1]
	if len(srvs)-1 == killIdx {
		reader = srvs[0]
	}
	readerAPI := api.NewClient(reader.url, reader.ca, reader.adminToken)
	leaseFor := cfg.LeaseTime
	if leaseFor == 0 {
		leaseFor = 30 * time.Second // the server's default
	}
	var leases *store.Store
	if cfg.Replicas > 1 {
		res.LeaseTimeS = leaseFor.Seconds()
		if leases, err = store.Open(ctx, dsn); err != nil {
			return nil, fmt.Errorf("bench fleet: open the store for the lease census: %w", err)
		}
		defer leases.Close()
	}

	// The fleet, in simulator processes.
	cfg.Log.Info("bench fleet: starting the simulator", "nodes", cfg.Nodes, "processes", procs)
	fl, err := startSimulator(ctx, cfg, srv, procs)
	if err != nil {
		return nil, err
	}
	defer fl.Close()
	res.KeepAlive = fl.KeepAlive()
	nodes := fl.Names()

	// Enrollment: every node, then the golden import from the first one.
	cfg.Log.Info("bench fleet: enrolling", "nodes", cfg.Nodes)
	start := time.Now()
	res.Enrolled, err = fl.Enroll(ctx)
	res.EnrollS = time.Since(start).Seconds()
	if err != nil {
		res.Notes = append(res.Notes, "enrollment errors: "+firstLine(err))
	}
	if res.Enrolled == 0 {
		return res, fmt.Errorf("bench fleet: no node enrolled: %w", err)
	}
	if failed, err := fl.HelloNodes(ctx, nodes[:1]); err != nil || len(failed) > 0 {
		return res, fmt.Errorf("bench fleet: hello from the golden host: %v %v", err, failed)
	}
	if err := golden(ctx, admin, nodes[0]); err != nil {
		return res, err
	}
	cfg.Log.Info("bench fleet: enrolled; every node says hello", "enrolled", res.Enrolled, "s", res.EnrollS)
	start = time.Now()
	if err := fl.Hello(ctx); err != nil {
		res.Notes = append(res.Notes, "hello errors: "+firstLine(err))
	}
	res.RampHeld = waitAttested(ctx, admin, cfg.Nodes, max(2*cfg.Interval, time.Minute), cfg.Progress)
	res.RampS = time.Since(start).Seconds()
	cfg.Log.Info("bench fleet: measuring", "ramp_s", res.RampS, "settled", res.RampHeld, "window", cfg.Duration)

	// The measured window.
	blob, err := os.ReadFile(filepath.Join(srv.dir, server.NovaBlobFile))
	if err != nil {
		return res, fmt.Errorf("bench fleet: %w", err)
	}
	size := storeSize(ctx, srv.dir, dsn)
	ioStart := ioWritten(ctx, srv.cmd.Process.Pid, dsn)
	cpus0 := make([]float64, len(srvs))
	var cpuErr error
	for i, s := range srvs {
		var err error
		if cpus0[i], err = procCPU(s.cmd.Process.Pid); err != nil {
			cpuErr = err
		}
	}
	dbCPU0 := pg.cpu()
	sim0, simErr := fl.CPU()
	bench0 := selfCPU()
	if err := fl.ResetSamples(ctx); err != nil {
		return res, fmt.Errorf("bench fleet: %w", err)
	}
	s0, err := fl.Samples(ctx)
	if err != nil {
		return res, fmt.Errorf("bench fleet: %w", err)
	}
	att0, ref0 := s0.Answered, s0.Failed
	t0 := time.Now()
	wctx, wcancel := context.WithDeadline(ctx, t0.Add(cfg.Duration))
	defer wcancel()
	poller := newPoller(reader.url, reader.ca, strings.TrimSpace(string(blob)))
	names := nodes[:min(1000, len(nodes))]
	var wg sync.WaitGroup
	if cfg.Progress != nil {
		wg.Go(func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			total := int(cfg.Duration.Seconds())
			for {
				select {
				case <-wctx.Done():
					cfg.Progress("measured s", total, total)
					return
				case <-t.C:
					cfg.Progress("measured s", int(time.Since(t0).Seconds()), total)
				}
			}
		})
	}
	var pollTimes []time.Duration
	wg.Go(func() { pollTimes = poller.sample(wctx, names) })
	var tamperTimes []time.Duration
	tampered := map[string]bool{}
	for _, name := range nodes[len(nodes)-cfg.Tampered:] {
		tampered[name] = true
	}
	if cfg.Tampered > 0 {
		wg.Go(func() {
			select {
			case <-wctx.Done():
				return
			case <-time.After(cfg.Duration / 3):
			}
			tamperTimes, res.TamperMissed = tamper(wctx, fl, poller, nodes[len(nodes)-cfg.Tampered:])
		})
	}
	var notesMu sync.Mutex
	note := func(n string) {
		notesMu.Lock()
		res.Notes = append(res.Notes, n)
		notesMu.Unlock()
	}
	killCPU, killed := 0.0, false
	if killIdx >= 0 {
		wg.Go(func() {
			select {
			case <-wctx.Done():
				return
			case <-time.After(cfg.KillReplicaAfter):
			}
			victim := srvs[killIdx]
			killCPU, _ = procCPU(victim.cmd.Process.Pid)
			if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				note("SIGKILL " + victim.name + ": " + err.Error())
				return
			}
			at := time.Now()
			killed, res.ReplicaKilled = true, victim.name
			cfg.Log.Info("bench fleet: killed a replica", "replica", victim.name)
			var lost, unknown map[string]bool
			var kw sync.WaitGroup
			kw.Go(func() {
				lost, unknown, res.MaxAgeAfterKillS, res.LostSamples = sampleVerdicts(wctx, readerAPI, cfg.Interval)
			})
			d, ok := reclaimed(wctx, leases, at, leaseFor, cfg.Replicas-1)
			kw.Wait()
			res.HeldAfterKill = &ok
			if ok {
				s := d.Seconds()
				res.ReclaimedWithinS = &s
			}
			n, u := len(lost), len(unknown)
			res.LostVerdicts, res.UnknownAfterKill = &n, &u
			if n > 0 {
				note(fmt.Sprintf("lost verdicts after the kill, e.g. %s", slices.Sorted(maps.Keys(lost))[0]))
			}
		})
	}
	if cfg.Replicas > 1 {
		wg.Go(func() {
			select {
			case <-wctx.Done():
				return
			case <-time.After(cfg.Duration * 2 / 3):
			}
			if d, err := knownGoodPropagation(wctx, admin, readerAPI); err == nil {
				ms := float64(d.Microseconds()) / 1000
				res.KnownGoodPropagationMs = &ms
			} else {
				note("known-good propagation: " + err.Error())
			}
		})
	}
	<-wctx.Done()
	wg.Wait()
	window := time.Since(t0)

	// The end.
	smp, err := fl.Samples(ctx)
	if err != nil {
		return res, fmt.Errorf("bench fleet: %w", err)
	}
	st := smp.Stats()
	res.Attestations = st.Answered - att0
	res.ChallengesRefused = st.Failed - ref0
	res.AttestationsPerS = float64(res.Attestations) / window.Seconds()
	res.ExpectedPerS = float64(cfg.Nodes) / cfg.Interval.Seconds()
	for i, s := range srvs {
		if i == killIdx && killed {
			res.ServerCPUS += killCPU - cpus0[i]
			continue
		}
		cpu1, err := procCPU(s.cmd.Process.Pid)
		if err != nil {
			cpuErr = err
		}
		res.ServerCPUS += cpu1 - cpus0[i]
	}
	if cpuErr != nil {
		res.ServerCPUS = 0
	} else if res.Attestations > 0 {
		res.ServerCPUPerAtt = res.ServerCPUS / float64(res.Attestations)
	}
	if pg != nil {
		res.DBCPUS = pg.cpu() - dbCPU0
	}
	sim1, err := fl.CPU()
	if err == nil && simErr == nil {
		res.SimCPUS = sim1 - sim0
	}
	res.BenchCPUS = selfCPU() - bench0
	for i, s := range srvs {
		if i != killIdx || !killed {
			res.ServerRSS += procRSS(s.cmd.Process.Pid)
		}
	}
	res.ServerRSSPerNode = float64(res.ServerRSS) / float64(cfg.Nodes)
	res.ServerFiles, res.ServerFileLimit = procFiles(srv.cmd.Process.Pid)
	if res.ServerFileLimit > 0 && res.ServerFiles >= res.ServerFileLimit-64 {
		res.Notes = append(res.Notes, fmt.Sprintf("the server holds %d open files, its limit is %d: it cannot accept more connections (one per kept-alive agent)", res.ServerFiles, res.ServerFileLimit))
	}
	res.BytesWritten = storeSize(ctx, srv.dir, dsn) - size
	ioEnd := ioWritten(ctx, srv.cmd.Process.Pid, dsn)
	if res.Attestations > 0 {
		res.BytesPerAtt = float64(res.BytesWritten) / float64(res.Attestations)
		res.IOWritePerAtt = float64(ioEnd-ioStart) / float64(res.Attestations)
	}
	res.AttestLatency = ms(st.Answer)
	res.ChallengeGap = Latency{P50: st.Gap.P50.Seconds(), P99: st.Gap.P99.Seconds(), Max: st.Gap.Max.Seconds(), N: st.Gap.N}
	if cfg.Mode == "push" {
		rt := ms(st.RoundTrip)
		res.PushRoundTrip = &rt
	}
	res.PollHosts1000 = msOf(pollTimes)
	res.PollHostsP99 = res.PollHosts1000.P99
	res.TamperToUntrusted = msOf(tamperTimes)

	var pool api.Pool
	if err := readerAPI.Do(ctx, http.MethodGet, "/v1/pool", nil, &pool); err != nil {
		return res, fmt.Errorf("bench fleet: read the pool at the end: %w", err)
	}
	now := time.Now()
	for _, h := range pool.Hosts {
		switch h.Level {
		case verdict.Trusted:
			res.TrustedAtEnd++
		case verdict.Untrusted:
			res.UntrustedAtEnd++
		default:
			res.UnknownAtEnd++
		}
		if h.Level != verdict.Unknown {
			res.FreshAtEnd++
		}
		if want := map[bool]verdict.Level{true: verdict.Untrusted, false: verdict.Trusted}[tampered[h.Host]]; h.Level != want {
			res.WrongAtEnd++
		}
		if vt, err := time.Parse(time.RFC3339, h.VTime); err == nil && h.Level != verdict.Unknown {
			age := now.Sub(vt)
			res.MaxVerdictAgeS = max(res.MaxVerdictAgeS, age.Seconds())
			if age > cfg.Interval+srv.timeout+time.Second {
				res.OlderThanInterval++
			}
		}
	}
	res.UnknownAtEnd += cfg.Nodes - len(pool.Hosts) // never enrolled
	res.WrongAtEnd += cfg.Nodes - len(pool.Hosts)
	res.Notes = append(res.Notes,
		fmt.Sprintf("one machine: the server, the simulated fleet and the bench's readers share its CPUs; sim_cpu_s is the sum over the %d simulator processes, bench_cpu_s the bench's readers (PollHosts, the pool)", procs))
	if cfg.Mode == "push" {
		res.Notes = append(res.Notes,
			"push mode: every node runs the agent's push loop (challenge, evidence, long-poll until next_in) in a goroutine; its hellos (the first, and after the tampered reboot) are immediate pushes",
			"push mode: attestations are pushes answered with a verdict; challenges_refused are pushes that failed; attest_latency_ms is the node's time from its challenge received to its evidence built; push_round_trip_ms is from the challenge requested to the verdict read, the server's part included; challenge_gap_s is between two challenges fetched by one node",
			"push mode: tamper_to_untrusted_ms is from the tampered node's push begun to PollHosts answering untrusted")
	} else {
		res.Notes = append(res.Notes, "attest_latency_ms is the simulator's answer time; the server-side round trip is not visible from outside the server")
	}
	res.Notes = append(res.Notes, "pollhosts_1000_ms is timed at the client over loopback HTTPS with a kept-alive connection")
	if !res.KeepAlive && cfg.Mode == "pull" {
		res.Notes = append(res.Notes, "a simulator process's open-file limit holds one file per node: nodes close each challenge's connection, so every attestation pays a TLS handshake (agents keep it alive)")
	}
	if pg != nil {
		res.Notes = append(res.Notes, "server_cpu_s excludes PostgreSQL's processes (db_cpu_s)")
	}
	if cfg.Replicas > 1 {
		res.Notes = append(res.Notes,
			fmt.Sprintf("%d replicas on one PostgreSQL database sharing one CA; the fleet enrolls and says hello through replica-1; PollHosts, tamper_to_untrusted_ms and the end's pool are read from %s", cfg.Replicas, reader.name),
			"server_cpu_s is the sum over the replicas (a killed replica's up to its kill); server_rss_bytes is the sum over the replicas alive at the end")
	}
	if killIdx >= 0 {
		res.Notes = append(res.Notes,
			fmt.Sprintf("replica-2 is killed with SIGKILL %v into the window; reclaimed_within_s: from the kill until the lease census shows the survivors alone alive and every active host held, read every 200 ms after the killed replica's leases ran out (one lease time at least)", cfg.KillReplicaAfter),
			fmt.Sprintf("lost_verdicts: hosts whose verdict on %s read unknown or older than two intervals (plus the verdict time's 1 s resolution) in any read of /v1/hosts about once a second from the kill to the end; unknown_after_kill: those that read unknown", reader.name))
	}
	if cfg.Replicas > 1 {
		res.Notes = append(res.Notes, fmt.Sprintf("knowngood_propagation_ms: from a new reference's PUT acknowledged by replica-1 to GET /v1/references on %s listing it, read every 10 ms", reader.name))
	}
	return res, nil
}

// firstLine shortens a joined error to its first line and a count.
func firstLine(err error) string {
	lines := strings.Split(err.Error(), "\n")
	if len(lines) == 1 {
		return lines[0]
	}
	return fmt.Sprintf("%s (and %d more lines)", lines[0], len(lines)-1)
}

func ms(p simfleet.Percentiles) Latency {
	f := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return Latency{P50: f(p.P50), P99: f(p.P99), Max: f(p.Max), N: p.N}
}

func msOf(s []time.Duration) Latency {
	if len(s) == 0 {
		return Latency{}
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return ms(simfleet.Percentiles{N: len(s), P50: s[len(s)/2], P99: s[len(s)*99/100], Max: s[len(s)-1]})
}

// golden imports the first node's measurements once its evidence is in
// (at most 60 s of tries).
func golden(ctx context.Context, admin *httpjson.Client, host string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := admin.Do(ctx, http.MethodPost, "/v1/golden", map[string]any{"host": host, "name": "fleet",
			"meta": map[string]string{"hypervisor": simfleet.Hypervisor, "source": "bench fleet golden host " + host}}, nil)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench fleet: golden-host import from %s: %w", host, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitAttested waits until every one of n hosts has a verdict that is not
// unknown, reading the pool every 2 s for at most limit, and tells progress
// (when set) how many have.
func waitAttested(ctx context.Context, admin *httpjson.Client, n int, limit time.Duration, progress func(string, int, int)) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var pool api.Pool
		if err := admin.Do(ctx, http.MethodGet, "/v1/pool", nil, &pool); err == nil {
			known := 0
			for _, h := range pool.Hosts {
				if h.Level != verdict.Unknown {
					known++
				}
			}
			if progress != nil {
				progress("attested", known, n)
			}
			if known == n {
				return true
			}
		}
		time.Sleep(2 * time.Second)
	}
	return false
}

// tamper reboots nodes into a tampered state, they say hello at once, and
// PollHosts is asked every 10 ms (at most 60 s) until it answers untrusted
// for each: the time from the hellos sent to each node's untrusted answer,
// for the nodes whose hello succeeded, and how many were not seen so.
func tamper(ctx context.Context, fl *simulator, p *poller, names []string) ([]time.Duration, int) {
	if err := fl.Reboot(ctx, names, simfleet.Tampered); err != nil {
		return nil, len(names)
	}
	sent := time.Now()
	var failed map[string]string
	hellos := make(chan struct{})
	go func() {
		defer close(hellos)
		failed, _ = fl.HelloNodes(ctx, names) // a process that failed names its nodes in failed
	}()
	seen := map[string]time.Duration{}
	deadline := sent.Add(time.Minute)
	for len(seen) < len(names) && time.Now().Before(deadline) && ctx.Err() == nil {
		levels, err := p.poll(ctx, names)
		now := time.Now()
		if err == nil {
			for name, lvl := range levels {
				if _, ok := seen[name]; !ok && lvl == string(verdict.Untrusted) {
					seen[name] = now.Sub(sent)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	<-hellos
	var times []time.Duration
	for name, d := range seen {
		if _, bad := failed[name]; !bad {
			times = append(times, d)
		}
	}
	return times, len(names) - len(times)
}

// poller asks PollHosts as Nova does, with the x-auth-blob.
type poller struct {
	http *http.Client
	url  string
	blob string
}

func newPoller(base string, ca []byte, blob string) *poller {
	return &poller{http: api.NewHTTPClient(ca), url: base + nova.PrefixNova + "/PollHosts", blob: blob}
}

// poll returns each host's trust_lvl.
func (p *poller) poll(ctx context.Context, hosts []string) (map[string]string, error) {
	body, _ := json.Marshal(map[string]any{"count": len(hosts), "hosts": hosts})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-auth-blob", p.blob)
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("PollHosts: %s", resp.Status)
	}
	var ans struct {
		Hosts []struct {
			Name  string `json:"host_name"`
			Level string `json:"trust_lvl"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		return nil, fmt.Errorf("PollHosts: %w", err)
	}
	out := make(map[string]string, len(ans.Hosts))
	for _, h := range ans.Hosts {
		out[h.Name] = h.Level
	}
	return out, nil
}

// sample times a PollHosts of hosts once a second until ctx ends.
func (p *poller) sample(ctx context.Context, hosts []string) []time.Duration {
	var out []time.Duration
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
		start := time.Now()
		if levels, err := p.poll(ctx, hosts); err == nil && len(levels) == len(hosts) {
			out = append(out, time.Since(start))
		}
	}
}

// serverProc is a `trustpool server` child process.
type serverProc struct {
	name       string // replica-N with replicas, server alone
	cmd        *exec.Cmd
	dir        string
	url        string
	ca         []byte
	adminToken string
	validity   time.Duration
	timeout    time.Duration
	done       chan struct{}
	logFile    *os.File
}

// startReplicas starts cfg.Replicas servers one after the other: the first
// creates the CA, the admin token and the Nova blob in its state directory,
// and the others start from copies of those four files (docs/replicas.md).
func startReplicas(ctx context.Context, cfg FleetConfig, dsn string) ([]*serverProc, error) {
	var srvs []*serverProc
	for i := range cfg.Replicas {
		seed := ""
		if i > 0 {
			seed = srvs[0].dir
		}
		s, err := startServer(ctx, cfg, dsn, i+1, seed)
		if err != nil {
			for _, s := range srvs {
				s.stop()
			}
			return nil, err
		}
		srvs = append(srvs, s)
	}
	return srvs, nil
}

// startServer starts `trustpool server` on a free loopback port and waits
// (at most 60 s) until it is ready: with replicas, replica n, its state
// directory seeded with the CA and bootstrap credentials from seed.
func startServer(ctx context.Context, cfg FleetConfig, dsn string, n int, seed string) (*serverProc, error) {
	name := "server"
	if cfg.Replicas > 1 {
		name = fmt.Sprintf("replica-%d", n)
	}
	dir := filepath.Join(cfg.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if seed != "" {
		for _, f := range []string{"ca.pem", "ca-key.pem", server.AdminTokenFile, server.NovaBlobFile} {
			b, err := os.ReadFile(filepath.Join(seed, f))
			if err != nil {
				return nil, fmt.Errorf("bench fleet: seed %s: %w", name, err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
				return nil, err
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	validity := cfg.Validity
	if validity <= 0 {
		validity = 3 * cfg.Interval
	}
	args := []string{"server", "--state-dir", dir, "--listen", addr, "--interval", cfg.Interval.String(),
		"--validity", validity.String(), "--enroll-rate", "1000000"}
	if dsn != "" {
		args = append(args, "--db", dsn)
	}
	if cfg.AgentConns != 0 {
		args = append(args, "--agent-conns", strconv.Itoa(cfg.AgentConns))
	}
	if cfg.Replicas > 1 {
		args = append(args, "--replica", name)
		if cfg.LeaseTime > 0 {
			args = append(args, "--lease-time", cfg.LeaseTime.String())
		}
	}
	logf, err := os.Create(filepath.Join(cfg.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(cfg.Exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} // the server does not outlive the bench
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench fleet: start %s: %w", name, err)
	}
	s := &serverProc{name: name, cmd: cmd, dir: dir, url: "https://" + addr, validity: validity, timeout: 10 * time.Second, done: make(chan struct{}), logFile: logf}
	go func() { cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-s.done:
			s.stop()
			return nil, fmt.Errorf("bench fleet: %s exited: %s", name, s.tail())
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("bench fleet: %s was not ready within a minute: %s", name, s.tail())
		}
		ca, err1 := os.ReadFile(filepath.Join(dir, "ca.pem"))
		tok, err2 := os.ReadFile(filepath.Join(dir, server.AdminTokenFile))
		if err1 != nil || err2 != nil {
			continue
		}
		c := api.NewHTTPClient(ca)
		resp, err := c.Get(s.url + "/readyz")
		if err != nil {
			continue
		}
		resp.Body.Close()
		c.CloseIdleConnections()
		if resp.StatusCode == http.StatusOK {
			s.ca, s.adminToken = ca, strings.TrimSpace(string(tok))
			return s, nil
		}
	}
}

// reclaimed waits until the store's lease census shows every active host
// held with only the survivors alive, reading it every 200 ms once the
// killed replica's leases (renewed at the latest at the kill) have run out;
// it returns the time since the kill, or false when ctx ends first.
func reclaimed(ctx context.Context, st *store.Store, killed time.Time, lease time.Duration, survivors int) (time.Duration, bool) {
	select {
	case <-ctx.Done():
		return 0, false
	case <-time.After(time.Until(killed.Add(lease))):
	}
	for {
		now := time.Now()
		if c, err := st.LeaseCensus(ctx, now); err == nil && c.Owners == survivors && c.Active > 0 && c.Held == c.Active {
			return now.Sub(killed), true
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// sampleVerdicts reads /v1/hosts about once a second until ctx ends and
// returns the active hosts whose verdict was unknown, missing or older than
// two intervals in any read (the verdict time has a resolution of a second,
// which is allowed for), those of them that read unknown or missing, the
// oldest verdict read, and the number of reads.
func sampleVerdicts(ctx context.Context, c *httpjson.Client, interval time.Duration) (lost, unknown map[string]bool, maxAge float64, n int) {
	lost, unknown = map[string]bool{}, map[string]bool{}
	for ctx.Err() == nil {
		var hs []api.HostView
		if err := c.Do(ctx, http.MethodGet, "/v1/hosts", nil, &hs); err == nil {
			n++
			now := time.Now()
			for _, h := range hs {
				if h.State != store.HostActive {
					continue
				}
				if h.Verdict == nil || h.Verdict.Level == verdict.Unknown {
					lost[h.Name], unknown[h.Name] = true, true
					continue
				}
				vt, err := time.Parse(time.RFC3339, h.Verdict.VTime)
				if err != nil {
					lost[h.Name] = true
					continue
				}
				age := now.Sub(vt)
				maxAge = max(maxAge, age.Seconds())
				if age > 2*interval+time.Second {
					lost[h.Name] = true
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return lost, unknown, maxAge, n
}

// knownGoodPropagation PUTs a new reference (class host_unique on PCR 23,
// which no policy approves, so no verdict changes) on from, and returns the
// time from its acknowledgement until to's GET /v1/references lists it
// (read every 10 ms, at most 30 s).
func knownGoodPropagation(ctx context.Context, from, to *httpjson.Client) (time.Duration, error) {
	const name = "bench-fleet-propagation"
	ref := policy.Reference{Name: name, Class: policy.HostUnique, Meta: map[string]string{"source": "bench fleet"},
		Expect: []policy.Expectation{{PCR: 23, Bank: "sha256", Digests: []policy.Hex{bytes.Repeat([]byte{0xb3}, 32)}}}}
	if err := from.Do(ctx, http.MethodPut, "/v1/references/"+name, ref, nil); err != nil {
		return 0, fmt.Errorf("PUT /v1/references/%s: %w", name, err)
	}
	t := time.Now()
	deadline := t.Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var refs []policy.Reference
		if err := to.Do(ctx, http.MethodGet, "/v1/references", nil, &refs); err == nil &&
			slices.ContainsFunc(refs, func(r policy.Reference) bool { return r.Name == name }) {
			return time.Since(t), nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, errors.New("the new reference was not listed on the other replica within 30 s")
}

// tail is the end of the server's log.
func (s *serverProc) tail() string {
	b, _ := os.ReadFile(s.logFile.Name())
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// stop asks the server to stop (SIGTERM), and kills it after 10 s.
func (s *serverProc) stop() {
	select {
	case <-s.done:
	default:
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	s.logFile.Close()
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times on Linux.
const clockTick = 100

// procCPU returns a process's user + system CPU seconds.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("bad /proc stat")
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("bad /proc stat")
	}
	return float64(u+s) / clockTick, nil
}

// procFiles returns how many files a process holds open and its soft
// limit (0 when unknown).
func procFiles(pid int) (open, limit int) {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				limit, _ = strconv.Atoi(f[0])
			}
		}
	}
	return len(ents), limit
}

// procRSS returns a process's resident set (VmRSS) in bytes.
func procRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// selfCPU returns this process's user + system CPU seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// storeSize is the SQLite store's files in dir, or the PostgreSQL
// database's size.
func storeSize(ctx context.Context, dir, dsn string) int64 {
	if dsn != "" {
		var n int64
		withDB(ctx, dsn, func(db *sql.DB) error {
			return db.QueryRowContext(ctx, "SELECT pg_database_size(current_database())").Scan(&n)
		})
		return n
	}
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".db") {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
	}
	return n
}

// ioWritten is the server's storage writes so far: /proc/PID/io write_bytes
// with SQLite, PostgreSQL's WAL position with PostgreSQL.
func ioWritten(ctx context.Context, pid int, dsn string) int64 {
	if dsn != "" {
		var n int64
		withDB(ctx, dsn, func(db *sql.DB) error {
			return db.QueryRowContext(ctx, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").Scan(&n)
		})
		return n
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			return n
		}
	}
	return 0
}

func withDB(ctx context.Context, dsn string, fn func(*sql.DB) error) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(db)
}
