package internal_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

// pkg is what go list says of one package.
type pkg struct {
	path    string
	imports []string // direct imports of its non-test files
	deps    []string // everything its non-test files link, transitively
	tests   []string // direct imports of its test files
}

// listPackages runs go list over every trustpool package once.
func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-f",
		`{{.ImportPath}}|{{join .Imports " "}}|{{join .Deps " "}}|{{join .TestImports " "}} {{join .XTestImports " "}}`,
		"trustpool/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	pkgs := make(map[string]pkg)
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "|")
		if len(f) != 4 {
			t.Fatalf("go list: unexpected line %q", sc.Text())
		}
		pkgs[f[0]] = pkg{path: f[0], imports: strings.Fields(f[1]), deps: strings.Fields(f[2]), tests: strings.Fields(f[3])}
	}
	return pkgs
}

// matches reports whether dep is one of prefixes or inside one of them.
func matches(dep string, prefixes []string) bool {
	return slices.ContainsFunc(prefixes, func(p string) bool { return dep == p || strings.HasPrefix(dep, p+"/") })
}

// testKit reports whether p is test equipment for tests only (the kits
// are named so: verifytest, storetest, swtpmtest, bootsimtest,
// placementtest, crashtest).
func testKit(p string) bool { return strings.HasSuffix(path.Base(p), "test") }

// TestDependencies holds the arrows of the design (../shared/design.md,
// "The shape we want"): they point inward to a pure core, the agent carries
// nothing of the server's, foreign types stay in their integration package,
// and production code does not lean on test equipment.
func TestDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	pkgs := listPackages(t)
	need := func(p string) pkg {
		t.Helper()
		got, ok := pkgs[p]
		if !ok {
			t.Fatalf("go list did not list %s", p)
		}
		return got
	}
	forbid := func(rule string, roots, forbidden []string) {
		t.Helper()
		for _, root := range roots {
			for _, dep := range need(root).deps {
				if matches(dep, forbidden) {
					t.Errorf("%s: %s links %s", rule, root, dep)
				}
			}
		}
	}

	// The verification core is pure functions over bytes: the server's
	// verification path needs no networking, SQL, subprocess, TPM access
	// code or cgo, and fuzzing it touches nothing outside the process.
	core := []string{"evidence", "eventlog", "verify", "policy", "uefi", "verdict", "appraisal", "wire"}
	for i, c := range core {
		core[i] = "trustpool/internal/" + c
	}
	forbid("the pure core does no I/O", core, []string{
		"net/http", "database/sql", "os/exec", "runtime/cgo",
		"github.com/google/go-tpm", "github.com/google/go-tpm-tools", "github.com/google/go-attestation",
		"trustpool/internal/agent", "trustpool/internal/store", "trustpool/internal/fleetsim",
		"k8s.io", "trustpool/internal/kube",
	})
	// Nor sockets: net/url and net/netip, which parse names and addresses,
	// are fine.
	for _, root := range core {
		if slices.Contains(need(root).deps, "net") {
			t.Errorf("the pure core does no I/O: %s links net", root)
		}
	}

	// The agent runs on every compute node: it carries no database driver
	// and nothing of the server's (admission, storage, the API, the
	// poller).
	forbid("the agent links nothing of the server's", []string{"trustpool/internal/agent", "trustpool/internal/agent/tpm"}, []string{
		"database/sql", "modernc.org/sqlite", "github.com/jackc/pgx",
		"trustpool/internal/store", "trustpool/internal/enroll", "trustpool/internal/api",
		"trustpool/internal/integrity", "trustpool/internal/server", "trustpool/internal/auth",
		"trustpool/internal/fleetsim", "trustpool/internal/kube", "k8s.io",
	})
	// Nor does the server carry simulated attesters.
	forbid("the server links no test equipment", []string{"trustpool/internal/server"}, []string{"trustpool/internal/fleetsim"})
	// Simulated attesters are test equipment: besides the test kits, only
	// the bench and the binary's bench commands (bench fleet, its
	// simulator processes) link them.
	for _, p := range pkgs {
		if testKit(p.path) || matches(p.path, []string{"trustpool/internal/fleetsim", "trustpool/internal/bench", "trustpool/cmd/trustpool"}) {
			continue
		}
		forbid("only the bench links the simulator", []string{p.path}, []string{"trustpool/internal/fleetsim"})
	}
	// The control-plane kit speaks plain HTTP to the real binaries (built
	// by test/kube, a module of its own): it links no Kubernetes module, and
	// nothing links k8s.io/kubernetes itself.
	forbid("kubetest links no Kubernetes module", []string{"trustpool/internal/kube/kubetest"}, []string{"k8s.io", "sigs.k8s.io"})
	for _, p := range pkgs {
		forbid("only test/kube builds k8s.io/kubernetes", []string{p.path}, []string{"k8s.io/kubernetes"})
	}

	for _, p := range pkgs {
		// Only the Nova integration speaks OpenStack: gophercloud's types
		// stay inside internal/nova, tests included.
		if !matches(p.path, []string{"trustpool/internal/nova"}) {
			for _, dep := range append(slices.Clone(p.imports), p.tests...) {
				if matches(dep, []string{"github.com/gophercloud"}) {
					t.Errorf("only internal/nova imports gophercloud: %s imports %s", p.path, dep)
				}
			}
		}
		// Only the Kubernetes integration speaks to Kubernetes: client-go
		// stays inside internal/kube (its test kit included), tests too.
		if !matches(p.path, []string{"trustpool/internal/kube"}) {
			for _, dep := range append(slices.Clone(p.imports), p.tests...) {
				if matches(dep, []string{"k8s.io/client-go"}) {
					t.Errorf("only internal/kube imports client-go: %s imports %s", p.path, dep)
				}
			}
		}
		// Production code links no test kit; kits may use each other.
		if !testKit(p.path) {
			for _, dep := range p.deps {
				if strings.HasPrefix(dep, "trustpool/") && testKit(dep) {
					t.Errorf("production package %s links the test kit %s", p.path, dep)
				}
			}
		}
	}
}
