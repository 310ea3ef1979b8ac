package server_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"trustpool/internal/api"
	"trustpool/internal/fleetsim/fleet"
	"trustpool/internal/httpjson"
	"trustpool/internal/policy"
	"trustpool/internal/server"
	"trustpool/internal/store"
	"trustpool/internal/store/pgtest"
	"trustpool/internal/verdict"
)

// replica is one `trustpool server` process sharing the test's database.
type replica struct {
	name, url string
	cmd       *exec.Cmd
	log       bytes.Buffer
	api       *httpjson.Client
}

// TestReplicasSharePostgreSQL runs three server processes on one real
// PostgreSQL database and a simulated fleet: the replicas divide the hosts
// by leases; any of them answers for every host; a replica killed with
// SIGKILL has its hosts taken over within a lease time and no verdict goes
// unknown; a known-good change made on one is in force on the others; a
// tampered reboot recorded by one is read from another.
func TestReplicasSharePostgreSQL(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.NewDatabase(t)
	exe := filepath.Join(t.TempDir(), "trustpool")
	if out, err := exec.Command("go", "build", "-o", exe, "trustpool/cmd/trustpool").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	const lease = 3 * time.Second
	first := t.TempDir()
	start := func(name, dir string) *replica {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		r := &replica{name: name, url: "https://" + addr}
		r.cmd = exec.Command(exe, "server", "--state-dir", dir, "--listen", addr, "--db", dsn, "--replica", name,
			"--lease-time", lease.String(), "--interval", "2s", "--validity", "20s", "--enroll-rate", "6000")
		r.cmd.Stdout, r.cmd.Stderr = &r.log, &r.log
		if err := r.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			r.cmd.Process.Signal(os.Interrupt)
			r.cmd.Wait()
			if t.Failed() {
				t.Logf("%s:\n%s", name, r.log.String())
			}
		})
		waitFor(t, name+" listening", func() bool {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		ca, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := os.ReadFile(filepath.Join(dir, server.AdminTokenFile))
		if err != nil {
			t.Fatal(err)
		}
		r.api = api.NewClient(r.url, ca, strings.TrimSpace(string(tok)))
		return r
	}
	a := start("a", first)
	// The replicas share the CA and the bootstrap credentials: copied from
	// the first one's state directory before they start.
	var rs = []*replica{a}
	for _, name := range []string{"b", "c"} {
		rs = append(rs, start(name, shareCredentials(t, first)))
	}
	ctx := t.Context()
	ca, _ := os.ReadFile(filepath.Join(first, "ca.pem"))
	const nodes = 12
	fl := newFleet(t, a.url, ca, a.api, nodes)
	if n, err := fl.Enroll(ctx); err != nil || n != nodes {
		t.Fatalf("enrolled %d of %d: %v", n, nodes, err)
	}
	golden := fl.Nodes()[0].Name
	waitFor(t, "verified evidence of the golden host", func() bool {
		var bundle map[string]any
		return a.api.Do(ctx, "GET", "/v1/hosts/"+golden+"/evidence", nil, &bundle) == nil
	})
	if err := a.api.Do(ctx, "POST", "/v1/golden", map[string]string{"host": golden}, nil); err != nil {
		t.Fatal(err)
	}
	trustedEverywhere := func(rs []*replica) func() bool {
		return func() bool {
			for _, r := range rs {
				var hs []api.HostView
				if r.api.Do(ctx, "GET", "/v1/hosts", nil, &hs) != nil || len(hs) != nodes {
					return false
				}
				for _, h := range hs {
					if h.Verdict == nil || h.Verdict.Level != verdict.Trusted {
						return false
					}
				}
			}
			return true
		}
	}
	waitFor(t, "every host trusted on every replica", trustedEverywhere(rs))

	// The leases divide the hosts: every replica holds some, none twice.
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	census := func() store.Census {
		c, err := st.LeaseCensus(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	waitFor(t, "three replicas holding every lease", func() bool { c := census(); return c.Owners == 3 && c.Held == nodes })

	// A tampered reboot attested through a is read from c.
	tampered := fl.Nodes()[nodes-1]
	if err := fl.Reboot(tampered, fleet.Tampered); err != nil {
		t.Fatal(err)
	}
	if err := tampered.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "c reads the tampered reboot", func() bool {
		var h api.HostView
		return rs[2].api.Do(ctx, "GET", "/v1/hosts/"+tampered.Name, nil, &h) == nil && h.Verdict != nil && h.Verdict.Level == verdict.Untrusted
	})
	if err := fl.Reboot(tampered, fleet.Hypervisor); err != nil {
		t.Fatal(err)
	}
	if err := tampered.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every host trusted again", trustedEverywhere(rs))

	// SIGKILL one replica: it releases nothing. The others take its
	// hosts over within a lease time and no host goes unknown.
	b := rs[1]
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	survivors := []*replica{rs[0], rs[2]}
	for c := census(); c.Owners != 2 || c.Held != nodes; c = census() {
		if !trustedEverywhere(survivors)() {
			t.Fatal("while the killed replica's leases ran out a host was not trusted on a survivor")
		}
		if time.Since(killed) > time.Minute {
			t.Fatal("the killed replica's hosts were not taken over")
		}
	}
	t.Logf("the killed replica's hosts were taken over %v after the kill (lease %v)", time.Since(killed).Round(100*time.Millisecond), lease)
	// Two intervals of attestation by the survivors alone: still every
	// host trusted on both.
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); {
		if !trustedEverywhere(survivors)() {
			t.Fatal("after the takeover a host is not trusted on a survivor")
		}
	}

	// A known-good change on c is in force on a: the golden vmm reference
	// retired on c makes every host untrusted on a.
	var refs []policy.Reference
	if err := rs[2].api.Do(ctx, "GET", "/v1/references", nil, &refs); err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(refs, func(r policy.Reference) bool { return r.Class == policy.VMM })
	if i < 0 {
		t.Fatalf("no vmm reference among %+v", refs)
	}
	if err := rs[2].api.Do(ctx, "DELETE", "/v1/references/"+refs[i].Name, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the retirement on c in force on a", func() bool {
		var got []policy.Reference
		return a.api.Do(ctx, "GET", "/v1/references", nil, &got) == nil &&
			!slices.ContainsFunc(got, func(r policy.Reference) bool { return r.Name == refs[i].Name })
	})
	waitFor(t, "every host untrusted on a", func() bool {
		var hs []api.HostView
		if a.api.Do(ctx, "GET", "/v1/hosts", nil, &hs) != nil {
			return false
		}
		for _, h := range hs {
			if h.Verdict == nil || h.Verdict.Level != verdict.Untrusted {
				return false
			}
		}
		return true
	})
}
