package store_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"trustpool/internal/store"
	"trustpool/internal/store/pgtest"
	"trustpool/internal/verdict"
)

// benchEngines opens one store per available engine. PostgreSQL is left
// out (not skipped: SQLite still runs) when it is not installed.
func benchEngines(b *testing.B) map[string]*store.Store {
	b.Helper()
	engines := map[string]*store.Store{
		"sqlite": openSQLiteAt(b, filepath.Join(b.TempDir(), "bench.db")),
	}
	if _, err := os.Stat(filepath.Join(pgtest.Bin, "initdb")); err == nil {
		c := pgtest.Start(b)
		engines["postgres"] = openDSN(b, c.NewDatabase(b))
	}
	return engines
}

// seedVerdicts gives n hosts a verdict each (one in ten untrusted, with
// reasons), writing from 8 goroutines.
func seedVerdicts(b *testing.B, s *store.Store, n int) {
	b.Helper()
	ctx := b.Context()
	at := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				name := fmt.Sprintf("node%06d", i)
				h := store.Host{Name: name, State: store.HostActive, EKPublic: []byte(name), URL: "https://" + name + ":9443",
					CreatedAt: at, UpdatedAt: at}
				if err := s.PutHost(ctx, h); err != nil {
					errs <- err
					return
				}
				v := verdict.Verdict{Host: name, Level: verdict.Trusted, VTime: at, Expiry: at.Add(time.Hour), Policy: "default@1"}
				if i%10 == 0 {
					v.Level = verdict.Untrusted
					v.Reasons = []verdict.Reason{verdict.PCRReason(verdict.CodePCRMismatch, 18, "sha256", "PCR 18 is 3fa4…, want 91bc…")}
				}
				if _, err := s.PutVerdict(ctx, v, nil); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("seed: %v", err)
	}
}

// BenchmarkLatestVerdicts reads every verdict, as a restarting server does
// to rebuild its cache.
func BenchmarkLatestVerdicts(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		for engine, s := range benchEngines(b) {
			seedVerdicts(b, s, n)
			b.Run(fmt.Sprintf("%s/%d", engine, n), func(b *testing.B) {
				for b.Loop() {
					vs, err := s.LatestVerdicts(b.Context())
					if err != nil {
						b.Fatal(err)
					}
					if len(vs) != n {
						b.Fatalf("%d verdicts, want %d", len(vs), n)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/verdict")
			})
		}
	}
}

// BenchmarkPutVerdict writes one attestation's outcome: the verdict, and
// the verified evidence of the given size (none: the agent was unreachable).
func BenchmarkPutVerdict(b *testing.B) {
	const hosts = 1000
	engines := benchEngines(b)
	for engine, s := range engines {
		seedVerdicts(b, s, hosts)
		for _, size := range []int{0, 4 << 10, 64 << 10} {
			var ev *store.EvidenceRecord
			if size > 0 {
				ev = &store.EvidenceRecord{Evidence: bytes.Repeat([]byte("e"), size), Nonce: make([]byte, 32),
					Measurements: bytes.Repeat([]byte("m"), 1024)}
			}
			put := func(b *testing.B, i int) {
				name := fmt.Sprintf("node%06d", i%hosts)
				at := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
				v := verdict.Verdict{Host: name, Level: verdict.Trusted, VTime: at, Expiry: at.Add(time.Hour)}
				if i%100 == 0 { // an occasional level change writes history too
					v.Level = verdict.Untrusted
				}
				var rec *store.EvidenceRecord
				if ev != nil {
					r := *ev
					r.Host, r.VerifiedAt = name, at
					rec = &r
				}
				if _, err := s.PutVerdict(b.Context(), v, rec); err != nil {
					b.Fatal(err)
				}
			}
			b.Run(fmt.Sprintf("%s/evidence=%d", engine, size), func(b *testing.B) {
				b.SetBytes(int64(size))
				i := 0
				for b.Loop() {
					put(b, i)
					i++
				}
			})
			b.Run(fmt.Sprintf("%s/evidence=%d/parallel", engine, size), func(b *testing.B) {
				b.SetBytes(int64(size))
				b.SetParallelism(4) // 4×GOMAXPROCS writers, as the integrity service's workers
				var mu sync.Mutex
				next := 0
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						mu.Lock()
						i := next
						next++
						mu.Unlock()
						put(b, i)
					}
				})
			})
		}
	}
}

// BenchmarkRecordTransitions records one batch in which every one of
// 10,000 hosts changes level, as a re-evaluation after a known-good
// change does: the verdicts and, for each, its hash-chained audit entry,
// and with outbox=true one webhook notification and one trait change.
func BenchmarkRecordTransitions(b *testing.B) {
	const n = 10_000
	for engine, s := range benchEngines(b) {
		seedVerdicts(b, s, n)
		i := 0 // batches so far: each flips every level and moves time on
		for _, outbox := range []bool{false, true} {
			then := func(v verdict.Verdict, prev verdict.Level) store.Transition {
				t := store.Transition{Audit: &store.Entry{Time: v.VTime, Actor: "system", Action: "verdict.change", Subject: v.Host,
					Detail: []byte(`{"from":"` + string(prev) + `","to":"` + string(v.Level) + `"}`)}}
				if outbox {
					t.Notifications = []store.Notification{{Target: "https://hooks.example/trust", Body: t.Audit.Detail, CreatedAt: v.VTime}}
					t.Trait = &store.TraitChange{Host: v.Host, CreatedAt: v.VTime}
				}
				return t
			}
			b.Run(fmt.Sprintf("%s/outbox=%v", engine, outbox), func(b *testing.B) {
				recs := make([]store.Record, n)
				var ru0 syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
				for b.Loop() {
					i++
					at := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)
					level := verdict.Untrusted
					if i%2 == 0 {
						level = verdict.Trusted
					}
					for h := range recs {
						recs[h] = store.Record{Verdict: verdict.Verdict{Host: fmt.Sprintf("node%06d", h), Level: level, VTime: at, Expiry: at.Add(time.Hour)}}
					}
					out, err := s.RecordVerdicts(b.Context(), recs, then)
					if err != nil {
						b.Fatal(err)
					}
					if changed := len(slices.DeleteFunc(out, func(r store.Recorded) bool { return !r.Changed })); changed < n*9/10 {
						b.Fatalf("%d level changes, want at least %d", changed, n*9/10)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/batch")
				// This process's CPU time (PostgreSQL's own is not in it): what
				// a loaded machine inflates least.
				var ru syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
				cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
				b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/batch")
			})
		}
	}
}

// BenchmarkAttestationEvidence records one attestation's verdict with its
// verified evidence as an agent sends it: a 9 KiB document whose quote,
// signature and nonce are new every time, and 10 KiB of measurements that
// a steady host repeats (steady) or that change every time (changed). On
// SQLite write-B/op is what the process wrote to storage (/proc/self/io
// write_bytes: the WAL and its checkpoints).
func BenchmarkAttestationEvidence(b *testing.B) {
	const hosts = 1000
	for engine, s := range benchEngines(b) {
		seedVerdicts(b, s, hosts)
		body := bytes.Repeat([]byte("e"), 9<<10)
		measured := bytes.Repeat([]byte("m"), 10<<10)
		seq := map[string]int64{} // each host's attestations so far
		i := 0
		attest := func(b *testing.B, steady bool) {
			host := fmt.Sprintf("node%06d", i%hosts)
			seq[host]++
			at := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond)
			ev := slices.Clone(body)
			copy(ev, fmt.Sprintf(`{"quote":"%0700d`, i)) // a new quote, signature and nonce
			m := measured
			if !steady {
				m = slices.Clone(measured)
				copy(m, fmt.Sprintf("%d", i))
			}
			v := verdict.Verdict{Host: host, Level: verdict.Trusted, VTime: at, Expiry: at.Add(time.Hour), Seq: seq[host], Policy: "default@1"}
			rec := &store.EvidenceRecord{Host: host, Evidence: ev, Nonce: []byte(fmt.Sprintf("%032d", i)), Measurements: m, VerifiedAt: at}
			if _, err := s.PutVerdict(b.Context(), v, rec); err != nil {
				b.Fatal(err)
			}
			i++
		}
		for range hosts { // every host has its evidence stored
			attest(b, true)
		}
		for _, steady := range []bool{true, false} {
			name := fmt.Sprintf("%s/steady=%v", engine, steady)
			b.Run(name, func(b *testing.B) {
				w0 := writeBytes()
				for b.Loop() {
					attest(b, steady)
				}
				if engine == "sqlite" && w0 >= 0 {
					b.ReportMetric(float64(writeBytes()-w0)/float64(b.N), "write-B/op")
				}
			})
		}
	}
}

// writeBytes is this process's write_bytes from /proc/self/io, or -1.
func writeBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}
