package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"trustpool/internal/agent/tpm"
	"trustpool/internal/api"
	"trustpool/internal/auth"
	"trustpool/internal/bench"
	"trustpool/internal/enroll"
	"trustpool/internal/evidence"
	"trustpool/internal/integrity"
	"trustpool/internal/pki"
	"trustpool/internal/policy"
	"trustpool/internal/server"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

// TestOutputFlags: --output takes json or table and nothing else, --json
// is --output json, and the two cannot disagree.
func TestOutputFlags(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    string // the format, or "" when parsing fails
		wantErr string
	}{
		{nil, formatTable, ""},
		{[]string{"--output", "json"}, formatJSON, ""},
		{[]string{"--output=table"}, formatTable, ""},
		{[]string{"--json"}, formatJSON, ""},
		{[]string{"--json", "--output", "json"}, formatJSON, ""},
		{[]string{"--output", "json", "--json"}, formatJSON, ""},
		{[]string{"--json=false"}, formatTable, ""},
		{[]string{"--output", "yaml"}, "", `"yaml": want json or table`},
		{[]string{"--output", "JSON"}, "", "want json or table"},
		{[]string{"--output", ""}, "", "want json or table"},
		{[]string{"--json", "--output", "table"}, "", "--json is --output json: give one of them"},
		{[]string{"--output", "table", "--json"}, "", "--json is --output json: give one of them"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var o output
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			fs.SetOutput(io.Discard)
			o.register(fs)
			err := fs.Parse(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || o.format != tc.want {
				t.Fatalf("format %q, err %v; want %q", o.format, err, tc.want)
			}
		})
	}
	// Through the real command line: a bad value stops the command before
	// it reaches a server.
	cmd := rootCmd()
	cmd.SetArgs([]string{"hosts", "--output", "yaml", "--server", "https://127.0.0.1:1"})
	cmd.SetOut(io.Discard)
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), `invalid argument "yaml" for "--output" flag: "yaml": want json or table`) {
		t.Fatalf("trustpool hosts --output yaml: %v", err)
	}
}

// TestProgress: on a terminal one line rewritten in place, at most every
// 100 ms and at a stage's end; elsewhere (with --progress) a line every 5 s
// and at the end; log lines written through it go below the progress line;
// nothing when stderr is no terminal and --progress is not given.
func TestProgress(t *testing.T) {
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	var b bytes.Buffer
	tty := &progress{w: &b, tty: true, every: 100 * time.Millisecond, now: clock}
	tty.Report("enrolled", 1, 3)
	tty.Report("enrolled", 2, 3) // within 100 ms: not drawn
	now = now.Add(100 * time.Millisecond)
	tty.Report("enrolled", 2, 3)
	fmt.Fprintf(tty, "level=INFO msg=halfway\n")
	tty.Report("enrolled", 3, 3) // the end, and the line ends
	tty.Report("enrolled", 3, 3)
	tty.Report("attested", 0, 3)
	tty.Done()
	tty.Done()
	want := "\renrolled 1/3\033[K\renrolled 2/3\033[K\nlevel=INFO msg=halfway\n\renrolled 3/3\033[K\n\rattested 0/3\033[K\n"
	if b.String() != want {
		t.Errorf("on a terminal:\n%q\nwant\n%q", b.String(), want)
	}

	b.Reset()
	lines := &progress{w: &b, every: 5 * time.Second, now: clock}
	for i := range 10 {
		lines.Report("measured s", i, 10)
		now = now.Add(time.Second)
	}
	lines.Report("measured s", 10, 10)
	lines.Report("waiting s", 7, 0)
	lines.Done()
	if want := "measured s 0/10\nmeasured s 5/10\nmeasured s 10/10\nwaiting s 7\n"; b.String() != want {
		t.Errorf("elsewhere:\n%q\nwant\n%q", b.String(), want)
	}

	var nilp *progress // quiet: every method does nothing
	nilp.Report("enrolled", 1, 2)
	nilp.Done()

	yes, no := true, false
	for _, tc := range []struct {
		flag *bool
		w    io.Writer
		want bool
	}{
		{nil, &b, false}, // a buffer is no terminal
		{&yes, &b, true},
		{&no, &b, false},
		{&no, os.Stderr, false},
	} {
		o := output{progress: tc.flag}
		if got := o.progressTo(tc.w) != nil; got != tc.want {
			t.Errorf("--progress %v to %T: reporting %v, want %v", tc.flag, tc.w, got, tc.want)
		}
	}
	if dn, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		defer dn.Close()
		if (&output{}).progressTo(dn) == nil || !isTerminal(dn) {
			t.Errorf("%s (a character device) is taken for a terminal, where progress costs nothing", os.DevNull)
		}
	}
}

// TestWaiting: while a slow request runs, the time waited is reported,
// and the line ends when it returns.
func TestWaiting(t *testing.T) {
	var b syncBuffer
	p := &progress{w: &b, every: 5 * time.Second}
	err := waiting(context.Background(), p, "waited ticks", time.Millisecond, func(context.Context) error {
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(b.String(), "waited ticks 1\n"); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				return errors.New("no progress while waiting")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := waiting(context.Background(), nil, "quiet", time.Millisecond, func(context.Context) error { return errors.New("kept") }); err == nil || err.Error() != "kept" {
		t.Errorf("waiting without progress: %v", err)
	}
}

// cliEnv is a real server (SQLite, loopback TLS) with a state directory the
// operator's commands read, and one host attested from simulated TPM
// evidence that verified.
type cliEnv struct {
	srv  *server.Server
	dir  string
	node *verifytest.Node
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(ctx, server.Config{StateDir: dir, Listen: "127.0.0.1:0", Log: log,
		Integrity: integrity.Config{Interval: time.Hour, Timeout: time.Second, Log: log}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	t.Setenv("TRUSTPOOL_STATE_DIR", dir)
	t.Setenv("TRUSTPOOL_TOKEN", "")
	n, err := verifytest.NewNode(verifytest.RSA2048, "node1.example")
	if err != nil {
		t.Fatal(err)
	}
	return &cliEnv{srv: srv, dir: dir, node: n}
}

// putHost stores an active host; with the env's node's AK when attested
// is set, else one whose agent cannot be reached.
func (e *cliEnv) putHost(t *testing.T, name string) {
	t.Helper()
	now := time.Now().UTC()
	h := store.Host{Name: name, State: store.HostActive, EKPublic: []byte("ek of " + name), AKPublic: e.node.AK.Public(),
		URL: "https://" + name + ".invalid", CreatedAt: now, UpdatedAt: now}
	if err := e.srv.Store().PutHost(context.Background(), h); err != nil {
		t.Fatal(err)
	}
}

// attest records a verdict of host with the node's verified evidence, as
// the server does with an agent's answer.
func (e *cliEnv) attest(t *testing.T, host string, seq int64, level verdict.Level) {
	t.Helper()
	nonce := bytes.Repeat([]byte{byte(seq)}, 32)
	ev, err := e.node.Evidence(nonce)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := verify.ParseAK(e.node.AK.Public())
	if err != nil {
		t.Fatal(err)
	}
	res := ak.Verify(verify.Input{Nonce: nonce, Required: e.node.Selection, Evidence: ev})
	if !res.OK() {
		t.Fatal(res.Reasons)
	}
	evJSON, _ := json.Marshal(ev)
	mJSON, _ := verify.MarshalMeasurements(&res.Measurements)
	at := store.Truncate(time.Now())
	v := verdict.Verdict{Host: host, Level: level, VTime: at, Expiry: at.Add(time.Hour), Seq: seq}
	if level == verdict.Untrusted {
		v.Reasons = []verdict.Reason{verdict.PCRReason(verdict.CodePCRMismatch, 18, "sha256", "PCR 18 (sha256) is 3fa4…")}
	}
	rec := &store.EvidenceRecord{Host: host, Evidence: evJSON, Nonce: nonce, Measurements: mJSON, VerifiedAt: at}
	if _, err := e.srv.Integrity().Recorder().Record(context.Background(), v, rec); err != nil {
		t.Fatal(err)
	}
}

// run runs trustpool with args against the env's server and returns its
// standard output and error.
func (e *cliEnv) run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := rootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append(args, "--server", e.srv.URL()))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// outputCase is one command of docs/cli.md's table, run once as a table and
// once as JSON. A command that changes something gets its own arguments
// each time (args is called with the format).
type outputCase struct {
	doc   string // the command as docs/cli.md names it
	args  func(format string) []string
	table func(t *testing.T, out string)
	json  func(t *testing.T, out []byte)
}

// same returns args for either format.
func same(args ...string) func(string) []string { return func(string) []string { return args } }

// decode decodes out strictly into a new T.
func decode[T any](t *testing.T, out []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T from %q: %v", v, out, err)
	}
	if dec.More() {
		t.Fatalf("more than one JSON value in %q", out)
	}
	return v
}

// contains returns a table check that out holds every want.
func contains(want ...string) func(t *testing.T, out string) {
	return func(t *testing.T, out string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("table lacks %q:\n%s", w, out)
			}
		}
		if json.Valid([]byte(out)) {
			t.Errorf("the table is JSON:\n%s", out)
		}
	}
}

// TestCommandsPrintBothFormats runs every operator's command of docs/cli.md
// against a real server: as a table by default, and as the JSON document
// docs/cli.md names with --output json; a read-only command prints the
// same bytes with --json.
func TestCommandsPrintBothFormats(t *testing.T) {
	e := newCLIEnv(t)
	ctx := context.Background()
	for _, h := range []string{"node1.example", "gone-table.example", "gone-json.example", "far.example"} {
		e.putHost(t, h)
	}
	e.attest(t, "node1.example", 1, verdict.Trusted)
	e.attest(t, "node1.example", 2, verdict.Untrusted)
	e.attest(t, "node1.example", 3, verdict.Trusted)
	for _, name := range []string{"wait-table.example", "wait-json.example"} {
		_, csr, err := pki.NewKeyAndCSR(name)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		if err := e.srv.Store().PutPending(ctx, store.Pending{PollHash: []byte("poll " + name), Host: name, EKPublic: []byte("ek of " + name),
			AKPublic: e.node.AK.Public(), AKName: []byte("ak"), URL: "https://" + name + ".invalid", CSR: csr, Source: "192.0.2.7",
			CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	fingerprint := func(host string) string { return hex.EncodeToString(store.EKHash([]byte("ek of " + host))) }
	refDoc := func(name string) string {
		return writeJSON(t, name+".json", policy.Reference{Name: name, Class: policy.Launch, Expect: []policy.Expectation{
			{PCR: 17, Bank: evidence.SHA256, Digests: []policy.Hex{bytes.Repeat([]byte{0x17}, 32)}}}})
	}
	polDoc := func(name string) string {
		return writeJSON(t, name+".json", policy.Policy{Name: name, Require: []policy.Class{policy.BIOS}, Approved: map[policy.Class][]string{policy.BIOS: {"node1.example-bios"}}})
	}
	// The change moves node1: its vmm reference retired.
	change := writeJSON(t, "change.json", policy.Change{Retire: []string{"node1.example-vmm"}})
	bundle := filepath.Join(t.TempDir(), "bundle.json")

	steps := []outputCase{
		{doc: "golden HOST", args: func(f string) []string {
			return []string{"golden", "node1.example", "--name", "node1.example", "--meta", "format=" + f}
		},
			table: contains("reference node1.example-bios v", "policy default v"),
			json: func(t *testing.T, out []byte) {
				if r := decode[api.ChangeResult](t, out); len(r.References) == 0 || len(r.Policies) != 1 {
					t.Errorf("golden: %+v", r)
				}
			}},
		{doc: "golden HOST --preview", args: same("golden", "node1.example", "--preview"),
			table: contains("no host changes level"),
			json:  func(t *testing.T, out []byte) { decode[api.ChangeResult](t, out) }},
		{doc: "hosts", args: same("hosts"),
			table: contains("HOST", "TRUST", "node1.example", "trusted", "far.example", "unknown"),
			json: func(t *testing.T, out []byte) {
				p := decode[api.Pool](t, out)
				if i := slices.IndexFunc(p.Hosts, func(h api.PoolEntry) bool { return h.Host == "node1.example" }); i < 0 || p.Hosts[i].Level != verdict.Trusted {
					t.Errorf("pool: %+v", p)
				}
			}},
		{doc: "host NAME", args: same("host", "node1.example"),
			table: contains("node1.example (active)", "trusted since", "history (newest first):", "pcr-mismatch"),
			json: func(t *testing.T, out []byte) {
				if h := decode[api.HostView](t, out); h.Name != "node1.example" || h.Verdict == nil || len(h.History) != 3 {
					t.Errorf("host: %+v", h)
				}
			}},
		{doc: "hosts show NAME", args: same("hosts", "show", "node1.example"),
			table: contains("node1.example (active)", "history (newest first):"),
			json: func(t *testing.T, out []byte) {
				if h := decode[api.HostView](t, out); h.Name != "node1.example" {
					t.Errorf("host: %+v", h)
				}
			}},
		{doc: "hosts attest NAME", args: same("hosts", "attest", "far.example"),
			table: contains("HOST", "far.example", "unknown"),
			json: func(t *testing.T, out []byte) {
				if e := decode[api.PoolEntry](t, out); e.Host != "far.example" || e.Level != verdict.Unknown || len(e.Reasons) == 0 {
					t.Errorf("attest: %+v", e)
				}
			}},
		{doc: "hosts delete NAME", args: func(f string) []string { return []string{"hosts", "delete", "gone-" + f + ".example"} },
			table: contains("deleted host gone-table.example"),
			json: func(t *testing.T, out []byte) {
				if d := decode[map[string]string](t, out); d["deleted"] != "gone-json.example" {
					t.Errorf("delete: %v", d)
				}
			}},
		{doc: "hosts pending", args: same("hosts", "pending"),
			table: contains("HOST", "EK FINGERPRINT", "wait-table.example", "192.0.2.7"),
			json: func(t *testing.T, out []byte) {
				if ps := decode[[]enroll.PendingView](t, out); len(ps) != 2 {
					t.Errorf("pending: %+v", ps)
				}
			}},
		{doc: "hosts approve NAME --ek FINGERPRINT", args: func(f string) []string {
			host := "wait-" + f + ".example"
			return []string{"hosts", "approve", host, "--ek", fingerprint(host)}
		},
			table: contains("admitted wait-table.example (active)"),
			json: func(t *testing.T, out []byte) {
				if h := decode[api.HostView](t, out); h.Name != "wait-json.example" || h.State != store.HostActive {
					t.Errorf("approve: %+v", h)
				}
			}},
		{doc: "hosts join-token NAME", args: same("hosts", "join-token", "new.example"),
			table: func(t *testing.T, out string) {
				if !regexp.MustCompile(`^[A-Za-z0-9_-]{20,}\n$`).MatchString(out) {
					t.Errorf("join-token table is not the token alone: %q", out)
				}
			},
			json: func(t *testing.T, out []byte) {
				if j := decode[struct{ Host, Token, Expires string }](t, out); j.Host != "new.example" || j.Token == "" {
					t.Errorf("join-token: %+v", j)
				}
			}},
		{doc: "reference list", args: same("reference", "list"),
			table: contains("NAME", "VERSION", "CLASS", "node1.example-vmm"),
			json: func(t *testing.T, out []byte) {
				if rs := decode[[]policy.Reference](t, out); len(rs) < 2 {
					t.Errorf("references: %+v", rs)
				}
			}},
		{doc: "reference put NAME -f FILE", args: func(f string) []string { return []string{"reference", "put", "txt-" + f, "-f", refDoc("txt-" + f)} },
			table: contains("reference txt-table v1 (launch)"),
			json: func(t *testing.T, out []byte) {
				if r := decode[api.ChangeResult](t, out); len(r.References) != 1 || r.References[0].Name != "txt-json" {
					t.Errorf("reference put: %+v", r)
				}
			}},
		{doc: "reference retire NAME", args: func(f string) []string { return []string{"reference", "retire", "txt-" + f} },
			table: contains("no host changes level"),
			json:  func(t *testing.T, out []byte) { decode[api.ChangeResult](t, out) }},
		{doc: "policy list", args: same("policy", "list"),
			table: contains("NAME", "REQUIRES", "APPROVED", "default"),
			json: func(t *testing.T, out []byte) {
				if ps := decode[[]policy.Policy](t, out); len(ps) == 0 {
					t.Errorf("policies: %+v", ps)
				}
			}},
		{doc: "policy put NAME -f FILE", args: func(f string) []string { return []string{"policy", "put", "bios-" + f, "-f", polDoc("bios-" + f)} },
			table: contains("policy bios-table v1"),
			json: func(t *testing.T, out []byte) {
				if r := decode[api.ChangeResult](t, out); len(r.Policies) != 1 || r.Policies[0].Name != "bios-json" {
					t.Errorf("policy put: %+v", r)
				}
			}},
		{doc: "preview -f CHANGE", args: same("preview", "-f", change),
			table: contains("HOST", "FROM", "TO", "node1.example", "trusted", "untrusted"),
			json: func(t *testing.T, out []byte) {
				if r := decode[api.ChangeResult](t, out); len(r.Changes) != 1 || r.Changes[0].Host != "node1.example" || r.Changes[0].To != verdict.Untrusted {
					t.Errorf("preview: %+v", r)
				}
			}},
		{doc: "apply -f CHANGE", args: func(f string) []string {
			ref := policy.Reference{Name: "apply-" + f, Class: policy.Launch, Expect: []policy.Expectation{
				{PCR: 17, Bank: evidence.SHA256, Digests: []policy.Hex{bytes.Repeat([]byte{0x17}, 32)}}}}
			return []string{"apply", "-f", writeJSON(t, "apply.json", policy.Change{References: []*policy.Reference{&ref}})}
		},
			table: contains("reference apply-table v1 (launch)", "no host changes level"),
			json: func(t *testing.T, out []byte) {
				if r := decode[api.ChangeResult](t, out); len(r.References) != 1 || r.References[0].Name != "apply-json" || len(r.Changes) != 0 {
					t.Errorf("apply: %+v", r)
				}
			}},
		{doc: "evidence export HOST --out FILE", args: same("evidence", "export", "node1.example", "--out", bundle),
			table: contains("wrote the evidence of node1.example to "+bundle, "check it with: trustpool verify --bundle", "BANK", "sha256  0"),
			json: func(t *testing.T, out []byte) {
				r := decode[exportReport](t, out)
				b, err := os.ReadFile(bundle)
				if err != nil || r.Host != "node1.example" || r.File != bundle || r.Bytes != len(b) || len(r.PCRs) == 0 {
					t.Errorf("export: %+v (%v)", r, err)
				}
			}},
		{doc: "token create", args: func(f string) []string { return []string{"token", "create", "--name", "t-" + f, "--role", "reader"} },
			table: contains("NAME", "ROLE", "TOKEN", "t-table", "reader"),
			json: func(t *testing.T, out []byte) {
				if tok := decode[auth.NewTokenResponse](t, out); tok.Name != "t-json" || tok.Token == "" {
					t.Errorf("token create: %+v", tok)
				}
			}},
		{doc: "token list", args: same("token", "list"),
			table: contains("NAME", "ROLE", "CREATED", "REVOKED", "t-table", "t-json"),
			json: func(t *testing.T, out []byte) {
				if ts := decode[[]auth.TokenInfo](t, out); len(ts) != 2 {
					t.Errorf("token list: %+v", ts)
				}
			}},
		{doc: "token revoke NAME", args: func(f string) []string { return []string{"token", "revoke", "t-" + f} },
			table: contains("revoked token t-table"),
			json: func(t *testing.T, out []byte) {
				if d := decode[map[string]string](t, out); d["revoked"] != "t-json" {
					t.Errorf("token revoke: %v", d)
				}
			}},
		{doc: "audit list", args: same("audit", "list"),
			table: contains("SEQ", "ACTOR", "ACTION", "token.create"),
			json: func(t *testing.T, out []byte) {
				if es := decode[[]auth.AuditEntry](t, out); len(es) < 5 {
					t.Errorf("audit list: %d entries", len(es))
				}
			}},
		{doc: "audit verify", args: same("audit", "verify"),
			table: contains("audit log intact: ", "head: "),
			json: func(t *testing.T, out []byte) {
				if v := decode[struct {
					Intact  bool   `json:"intact"`
					Entries int    `json:"entries"`
					Head    string `json:"head"`
				}](t, out); !v.Intact || v.Entries < 5 || !strings.Contains(v.Head, ":") {
					t.Errorf("audit verify: %+v", v)
				}
			}},
	}
	documented := cliDocCommands(t)
	// The commands of docs/cli.md that other tests run in both formats.
	elsewhere := map[string]string{
		"hosts --watch":              "TestWatchJSON, TestHostAndWatch",
		"eventlog replay --log FILE": "TestReplayOutput",
		"verify --bundle FILE":       "TestReplayOutput",
		"demo":                       "TestDemoOutput",
		"bench":                      "TestBenchOutput",
		"bench fleet":                "TestBenchOutput",
	}
	for _, d := range documented {
		if _, ok := elsewhere[d]; !ok && !slices.ContainsFunc(steps, func(c outputCase) bool { return c.doc == d }) {
			t.Errorf("docs/cli.md lists %q, which no test runs in both formats", d)
		}
	}
	for _, c := range steps {
		t.Run(c.doc, func(t *testing.T) {
			if !slices.Contains(documented, c.doc) {
				t.Errorf("docs/cli.md does not list %q", c.doc)
			}
			run := func(args ...string) string {
				t.Helper()
				out, _, err := e.run(t, args...)
				if err != nil {
					t.Fatalf("%v: %v", args, err)
				}
				return out
			}
			c.table(t, run(c.args(formatTable)...))
			args := c.args(formatJSON)
			c.json(t, []byte(run(append(args, "--output", "json")...)))
			if !slices.Equal(c.args(formatTable), args) {
				return // a change: run once per format
			}
			c.json(t, []byte(run(append(args, "--json")...)))
		})
	}
	// Without --out the bundle is the output, whatever --output says.
	for _, f := range []string{"--output=table", "--output=json"} {
		out, _, err := e.run(t, "evidence", "export", "node1.example", f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := evidence.DecodeBundle(strings.NewReader(out)); err != nil {
			t.Errorf("evidence export %s is not a bundle: %v", f, err)
		}
	}
}

// TestWatchJSON: hosts --watch --output json prints one levelChange object
// a line, the first sight of each host and every level change.
func TestWatchJSON(t *testing.T) {
	e := newCLIEnv(t)
	e.putHost(t, "node1.example")
	e.attest(t, "node1.example", 1, verdict.Trusted)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var watched syncBuffer
	done := make(chan error, 1)
	go func() {
		cmd := rootCmd()
		cmd.SetOut(&watched)
		cmd.SetArgs([]string{"hosts", "--watch", "--every", "50ms", "--output", "json", "--server", e.srv.URL()})
		done <- cmd.ExecuteContext(ctx)
	}()
	lines := func(n int) []levelChange {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			var got []levelChange
			sc := bufio.NewScanner(strings.NewReader(watched.String()))
			for sc.Scan() {
				got = append(got, decode[levelChange](t, sc.Bytes()))
			}
			if len(got) >= n {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("watch printed %d lines, want %d:\n%s", len(got), n, watched.String())
			}
		}
	}
	if first := lines(1)[0]; first.Host != "node1.example" || first.From != "" || first.To != verdict.Trusted {
		t.Fatalf("first line: %+v", first)
	}
	e.attest(t, "node1.example", 2, verdict.Untrusted)
	if ch := lines(2)[1]; ch.From != verdict.Trusted || ch.To != verdict.Untrusted || len(ch.Reasons) != 1 || ch.Reasons[0].Code != verdict.CodePCRMismatch {
		t.Fatalf("change line: %+v", ch)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestBenchOutput: the figures of trustpool bench and bench fleet as a
// table and as JSON.
func TestBenchOutput(t *testing.T) {
	r := &bench.Results{OS: "linux", Arch: "amd64", CPUs: 2, GOMAXPROCS: 2, DurationS: 2, Hosts: 10000, ReevaluatedHosts: 10000,
		Verify:    []bench.VerifyRate{{AK: "RSA-2048", HostsPS: 20000, BarePS: 40000, ShareOfB: 0.5}},
		PollHosts: []bench.QueryLatency{{Names: 1000, P50us: 284, P99us: 756}}, Filter: bench.QueryLatency{Names: 1000, P50us: 10, P99us: 20},
		RestartMs: 42, HeapPerVerdictB: 414, ReevaluateMs: 1180}
	var b bytes.Buffer
	if err := (&output{format: formatTable}).print(&b, r, r.WriteTable); err != nil {
		t.Fatal(err)
	}
	contains("full verification + policy, RSA-2048", "20000 hosts/s", "50% of the bare signature rate", "PollHosts, 1000 names", "p50 284µs, p99 756µs",
		"restart: cache rebuilt from SQLite, 10000 hosts", "42ms", "known-good change re-evaluated, 10000 hosts", "1.18s")(t, b.String())
	b.Reset()
	if err := (&output{format: formatJSON}).print(&b, r, r.WriteTable); err != nil {
		t.Fatal(err)
	}
	if got := decode[bench.Results](t, b.Bytes()); !slices.Equal(got.Verify, r.Verify) || got.ReevaluateMs != r.ReevaluateMs {
		t.Errorf("bench --output json: %+v", got)
	}

	fr := &bench.FleetResult{Nodes: 1000, Mode: "pull", IntervalS: 60, AttestLatency: bench.Latency{P50: 1.9, P99: 52, N: 3000},
		BytesPerAtt: 285, Notes: []string{"one machine", "two remarks"}}
	b.Reset()
	if err := printFleet(&b, &output{format: formatTable}, fr); err != nil {
		t.Fatal(err)
	}
	contains("nodes", "1000", "attest_latency_ms.p99", "52", "bytes_written_per_attestation", "285", "notes", "one machine", "two remarks")(t, b.String())
	if strings.Count(b.String(), "notes") != 1 {
		t.Errorf("bench fleet table names notes more than once:\n%s", b.String())
	}
	b.Reset()
	if err := printFleet(&b, &output{format: formatJSON}, fr); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "\n") != 1 {
		t.Errorf("bench fleet --output json is not one line: %q", b.String())
	}
	if got := decode[bench.FleetResult](t, b.Bytes()); got.Nodes != 1000 || got.AttestLatency.P99 != 52 {
		t.Errorf("bench fleet --output json: %+v", got)
	}
}

// cliDocCommands returns the commands docs/cli.md's JSON table names (its
// first column, without "trustpool ").
func cliDocCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		cell, ok := strings.CutPrefix(line, "| `trustpool ")
		if !ok {
			continue
		}
		cmd, _, _ := strings.Cut(cell, "`")
		out = append(out, cmd)
	}
	return out
}

// TestReplayOutput: the offline checks through the command line, as a
// report for people and as the JSON report of docs/eventlog.md.
func TestReplayOutput(t *testing.T) {
	n, err := verifytest.NewNode(verifytest.P256, "node1.example")
	if err != nil {
		t.Fatal(err)
	}
	bundle := writeJSON(t, "b.json", bundleFor(t, n))
	winLog := filepath.Join(eventlogTestdata, "windows_gcp_shielded_vm.bin")
	winPCRs := filepath.Join(eventlogTestdata, "windows_gcp_shielded_vm.pcrs.json")
	for _, tc := range []struct {
		args  []string
		table string
		check func(t *testing.T, out []byte)
	}{
		{[]string{"eventlog", "replay", "--log", winLog, "--pcrs", winPCRs}, "match", func(t *testing.T, out []byte) {
			if rep := decode[replayReport](t, out); rep.Events == 0 || len(rep.Errors) != 0 {
				t.Errorf("replay: %+v", rep)
			}
		}},
		{[]string{"verify", "--bundle", bundle}, "passed", func(t *testing.T, out []byte) {
			if rep := decode[bundleReport](t, out); !rep.Verified {
				t.Errorf("verify: %+v", rep)
			}
		}},
	} {
		run := func(extra ...string) string {
			cmd := rootCmd()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(io.Discard)
			cmd.SetArgs(append(slices.Clone(tc.args), extra...))
			if err := cmd.Execute(); err != nil {
				t.Fatalf("%v %v: %v", tc.args, extra, err)
			}
			return out.String()
		}
		contains(tc.table)(t, run())
		tc.check(t, []byte(run("--output", "json")))
		tc.check(t, []byte(run("--json")))
	}
}

// TestDemoOutput runs the demo (a built trustpool: the demo starts its
// agents from its own binary) on the in-process TPM simulator for one
// round: the pool as a table, and as one JSON object a line.
func TestDemoOutput(t *testing.T) {
	needSimulator(t)
	bin := filepath.Join(t.TempDir(), "trustpool")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	run := func(extra ...string) string {
		cmd := exec.Command(bin, append([]string{"demo", "--tpm", "simulator", "--nodes", "2", "--tampered", "1", "--once", "--interval", "2s"}, extra...)...)
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("demo %v: %v\n%s", extra, err, errOut.String())
		}
		return string(out)
	}
	contains("node1", "trusted", "node2", "untrusted")(t, run())
	for _, f := range [][]string{{"--output", "json"}, {"--json"}} {
		out := strings.TrimSpace(run(f...))
		for _, line := range strings.Split(out, "\n") {
			p := decode[api.Pool](t, []byte(line))
			if len(p.Hosts) != 2 || p.Hosts[0].Level != verdict.Trusted || p.Hosts[1].Level != verdict.Untrusted {
				t.Errorf("demo %v: %s", f, line)
			}
		}
	}
}

// needSimulator fails (CI) or skips the test when the in-process TPM
// simulator is not built in (no cgo).
func needSimulator(t *testing.T) {
	t.Helper()
	tp, err := tpm.Open(tpm.SimulatorAddr)
	switch {
	case errors.Is(err, tpm.ErrNoSimulator) && os.Getenv("CI") == "true":
		t.Fatal("the in-process TPM simulator is needed: build with cgo")
	case errors.Is(err, tpm.ErrNoSimulator):
		t.Skip("the in-process TPM simulator is not built in (no cgo)")
	case err != nil:
		t.Fatal(err)
	}
	tp.Close()
}

// TestAgentLogsJSON runs `trustpool agent --log-format json` on the
// in-process simulator against a real server: it enrolls with a join
// token and serves challenges, and every line it logs is one JSON object
// with the time, level, message and the agent's host.
func TestAgentLogsJSON(t *testing.T) {
	needSimulator(t)
	e := newCLIEnv(t)
	tok, _, err := e.run(t, "hosts", "join-token", "agent1.example")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		cmd := rootCmd()
		cmd.SetOut(io.Discard)
		cmd.SetErr(&logs)
		cmd.SetArgs([]string{"agent", "--name", "agent1.example", "--server", e.srv.URL(), "--server-ca", filepath.Join(e.dir, "ca.pem"),
			"--tpm", "simulator", "--simulate-boot", "clean", "--state-dir", t.TempDir(), "--listen", "127.0.0.1:0",
			"--join-token", strings.TrimSpace(tok), "--log-format", "json"})
		done <- cmd.ExecuteContext(ctx)
	}()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(logs.String(), "agent serving challenges"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not serve challenges:\n%s", logs.String())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent: %v\n%s", err, logs.String())
	}
	var msgs []string
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line struct {
			Time  time.Time `json:"time"`
			Level string    `json:"level"`
			Msg   string    `json:"msg"`
			Host  string    `json:"host"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.Time.IsZero() || line.Level == "" || line.Host != "agent1.example" {
			t.Errorf("log line %q: %+v %v", sc.Text(), line, err)
		}
		msgs = append(msgs, line.Msg)
	}
	if !slices.Contains(msgs, "enrolled") || !slices.Contains(msgs, "agent serving challenges") {
		t.Errorf("the agent logged %q, want its enrollment and its serving", msgs)
	}
}
