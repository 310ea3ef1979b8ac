package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"trustpool/internal/pki"
)

// TestServeProtocol drives a simulator process's side over pipes: a
// request before the fleet starts is refused, the start names the slice's
// nodes from its first on, a request naming a node of another slice is
// refused, and a request that does not decode strictly ends the exchange.
// No server is needed: nothing here dials it (push nodes open no port).
func TestServeProtocol(t *testing.T) {
	ca, err := pki.LoadOrCreateCA(t.TempDir(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	served := make(chan error, 1)
	go func() {
		served <- Serve(context.Background(), inR, outW, slog.New(slog.NewTextHandler(io.Discard, nil)))
		outW.Close()
	}()
	replies := bufio.NewScanner(outR)
	replies.Buffer(nil, maxReply)
	ask := func(req string) procReply {
		t.Helper()
		if _, err := io.WriteString(inW, req+"\n"); err != nil {
			t.Fatal(err)
		}
		if !replies.Scan() {
			t.Fatalf("no reply to %s: %v", req, replies.Err())
		}
		var rep procReply
		if err := json.Unmarshal(replies.Bytes(), &rep); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	if rep := ask(`{"op":"samples"}`); !strings.Contains(rep.Error, "not started") {
		t.Errorf("samples before start: %+v", rep)
	}
	start, _ := json.Marshal(procRequest{Op: opStart, Start: &ProcConfig{Server: "https://127.0.0.1:1", ServerCA: string(ca.CertPEM),
		AdminToken: "t", First: 1000, Nodes: 3, AK: "P-256", Mode: "push"}})
	rep := ask(string(start))
	if rep.Error != "" || strings.Join(rep.Names, " ") != "node-01001.fleet.test node-01002.fleet.test node-01003.fleet.test" || !rep.KeepAlive {
		t.Fatalf("start: %+v", rep)
	}
	if rep := ask(string(start)); !strings.Contains(rep.Error, "started already") {
		t.Errorf("a second start: %+v", rep)
	}
	if rep := ask(`{"op":"reboot","nodes":["node-00001.fleet.test"],"hypervisor":"x"}`); !strings.Contains(rep.Error, "no node") {
		t.Errorf("reboot of another slice's node: %+v", rep)
	}
	if rep := ask(`{"op":"samples"}`); rep.Error != "" || rep.Samples == nil || rep.Samples.Answered != 0 {
		t.Errorf("samples: %+v", rep)
	}
	io.WriteString(inW, `{"op":"samples","extra":1}`+"\n")
	if err := <-served; err == nil || !strings.Contains(err.Error(), "extra") {
		t.Errorf("a request with an unknown field: Serve returned %v", err)
	}
}
