package tamper_test

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"trustpool/internal/agent"
	"trustpool/internal/agent/bootsim"
	"trustpool/internal/agent/bootsim/bootsimtest"
	"trustpool/internal/agent/swtpm"
	"trustpool/internal/agent/swtpm/swtpmtest"
	"trustpool/internal/agent/tpm"
	"trustpool/internal/evidence"
)

// needSWTPM skips without swtpm, except in CI where it must be there.
func needSWTPM(t *testing.T) { swtpmtest.RequireBinary(t, swtpm.Binary) }

// quoted is one answer of a TPM to a challenge: the quote, its signature
// and the PCR values the agent reports with it.
type quoted struct {
	attest, sig []byte
	pcrs        []evidence.PCR
}

// quoteFunc answers a challenge in place of the honest agent code. real is
// the node's own TPM; last is the node's previous honest answer.
type quoteFunc func(real *tpm.TPM, nonce []byte, sel []evidence.Selection, last quoted) (quoted, error)

// honestQuote is what the trust agent does: read the PCRs and quote them,
// checking that the quote signed the values read (tpm.QuoteWithPCRs).
func honestQuote(t *tpm.TPM, nonce []byte, sel []evidence.Selection) (quoted, error) {
	attest, sig, pcrs, err := t.QuoteWithPCRs(nonce, sel)
	if err != nil {
		return quoted{}, err
	}
	return quoted{attest: attest, sig: sig, pcrs: pcrs}, nil
}

// evilTPM is a node's real TPM (swtpm) as a compromised trust agent uses
// it: the TPM is genuine and signs only what it measured, but the code
// between it and the network is the attacker's. agent.Agent calls
// QuoteWithPCRs for each challenge; a tamper function makes the answer.
type evilTPM struct {
	*tpm.TPM

	mu        sync.Mutex // guards the fields below, and orders answers
	tamper    quoteFunc  // nil: honest
	last      quoted     // the last honest answer, for replays
	lastNonce []byte     // the nonce of the last challenge received
}

func (e *evilTPM) set(f quoteFunc) {
	e.mu.Lock()
	e.tamper = f
	e.mu.Unlock()
}

func (e *evilTPM) nonce() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return bytes.Clone(e.lastNonce)
}

// QuoteWithPCRs answers a challenge honestly or with the tamper function.
// It holds mu throughout, so that two challenges answered at once (hello
// and an operator's attest) each report the values of their own quote.
func (e *evilTPM) QuoteWithPCRs(nonce []byte, sel []evidence.Selection) (attest, sig []byte, pcrs []evidence.PCR, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lastNonce = bytes.Clone(nonce)
	var q quoted
	if e.tamper == nil {
		if q, err = honestQuote(e.TPM, nonce, sel); err == nil {
			e.last = q
		}
	} else {
		q, err = e.tamper(e.TPM, nonce, sel, e.last)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	return q.attest, q.sig, q.pcrs, nil
}

// swNode is a compute node on swtpm after a simulated measured boot with an
// emulated Intel TXT launch, running the real trust agent (in process) over
// an evilTPM. It enrolled with a join token from the API.
type swNode struct {
	name       string
	tpm        *tpm.TPM
	evil       *evilTPM
	agentDir   string
	srtmPath   string
	drtmPath   string
	srtm, drtm []byte // the logs as booted
	token      string // the join token it enrolled with (now used)
}

// addNode boots a node, enrolls it and waits for its first verdict.
func (f *fixture) addNode(name string) *swNode {
	f.t.Helper()
	t := f.t
	tp, logs := bootsimtest.Boot(t, bootsim.Profile{Launch: true})
	dir := t.TempDir()
	n := &swNode{name: name, tpm: tp, evil: &evilTPM{TPM: tp}, agentDir: dir,
		srtmPath: filepath.Join(dir, "srtm.log"), drtmPath: filepath.Join(dir, "drtm.log"), srtm: logs.SRTM, drtm: logs.DRTM}
	n.writeLogs(t, n.srtm, n.drtm)
	var tok struct{ Token string }
	f.mustCall("POST", "/v1/join-tokens", map[string]string{"host": name}, &tok)
	n.token = tok.Token
	a, err := agent.New(agent.Config{Name: name, Server: f.srv.URL(), ServerCA: f.srv.CAPEM(), Listen: "127.0.0.1:0",
		StateDir: dir, EventLog: n.srtmPath, DRTMLog: n.drtmPath, JoinToken: tok.Token,
		Log: slog.New(slog.DiscardHandler)}, n.evil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "first verdict of "+name, func() bool { _, ok := f.srv.Integrity().Cache().Verdict(name); return ok })
	f.nodes[name] = n
	return n
}

// writeLogs replaces the event logs the agent sends with its next answer.
func (n *swNode) writeLogs(t *testing.T, srtm, drtm []byte) {
	t.Helper()
	if err := os.WriteFile(n.srtmPath, srtm, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.drtmPath, drtm, 0o600); err != nil {
		t.Fatal(err)
	}
}

// restore makes the node honest again.
func (n *swNode) restore(t *testing.T) {
	n.evil.set(nil)
	n.writeLogs(t, n.srtm, n.drtm)
}

// without returns sel without the given PCRs.
func without(sel []evidence.Selection, drop ...int) []evidence.Selection {
	var out []evidence.Selection
	for _, s := range sel {
		s.PCRs = slices.DeleteFunc(slices.Clone(s.PCRs), func(p int) bool { return slices.Contains(drop, p) })
		if len(s.PCRs) > 0 {
			out = append(out, s)
		}
	}
	return out
}

func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }
