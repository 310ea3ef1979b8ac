package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"trustpool/internal/integrity"
	"trustpool/internal/server"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestHostAndWatch runs `trustpool host NAME` and `trustpool hosts --watch`
// against a real server: the host's reasons and history are printed, and
// the watch prints a level change as it happens.
func TestHostAndWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(ctx, server.Config{StateDir: dir, Listen: "127.0.0.1:0", Log: log, Integrity: integrity.Config{Interval: time.Hour, Log: log}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done; srv.Close() }()
	now := time.Now().UTC()
	if err := srv.Store().PutHost(ctx, store.Host{Name: "node1", State: store.HostActive, EKPublic: []byte("ek"), URL: "https://node1.invalid", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	record := func(seq int64, l verdict.Level, reasons ...verdict.Reason) {
		t.Helper()
		at := store.Truncate(time.Now())
		if _, err := srv.Integrity().Recorder().Record(ctx, verdict.Verdict{Host: "node1", Level: l, VTime: at, Expiry: at.Add(time.Hour), Seq: seq, Reasons: reasons}, nil); err != nil {
			t.Fatal(err)
		}
	}
	record(1, verdict.Trusted)
	t.Setenv("TRUSTPOOL_STATE_DIR", dir)
	run := func(ctx context.Context, out io.Writer, args ...string) error {
		cmd := rootCmd()
		cmd.SetArgs(append(args, "--server", srv.URL()))
		cmd.SetOut(out)
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		cmd.SetContext(ctx)
		return cmd.ExecuteContext(ctx)
	}

	wctx, wcancel := context.WithCancel(ctx)
	var watched syncBuffer
	wdone := make(chan error, 1)
	go func() { wdone <- run(wctx, &watched, "hosts", "--watch", "--every", "50ms") }()
	waitLine := func(what, want string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(watched.String(), want); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("watch printed no %s (%q):\n%s", what, want, watched.String())
			}
		}
	}
	waitLine("first line", "node1\t- → trusted")
	record(2, verdict.Untrusted, verdict.PCRReason(verdict.CodePCRMismatch, 18, "sha256", "PCR 18 (sha256) is 3fa4…, the approved vmm references allow 91bc…"))
	waitLine("change", "node1\ttrusted → untrusted\tpcr-mismatch")
	wcancel()
	if err := <-wdone; err != nil {
		t.Fatalf("watch: %v", err)
	}

	var out bytes.Buffer
	if err := run(ctx, &out, "host", "node1"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"node1 (active)", "untrusted since", "pcr-mismatch: PCR 18 (sha256) is 3fa4…", "history (newest first):", "trusted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("trustpool host node1 lacks %q:\n%s", want, out.String())
		}
	}
	if err := run(ctx, io.Discard, "host", "ghost"); err == nil {
		t.Error("trustpool host of an unknown host succeeded")
	}
}
