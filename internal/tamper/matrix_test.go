package tamper_test

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"trustpool/internal/agent/swtpm"
	"trustpool/internal/agent/tpm"
	"trustpool/internal/api"
	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/integrity"
	"trustpool/internal/nova"
	"trustpool/internal/pki"
	"trustpool/internal/verdict"
	"trustpool/internal/verify"
	"trustpool/internal/verify/verifytest"
)

// validity is how long a verdict stands in the matrix's server.
const validity = 10 * time.Minute

// tamperCase is one attack. run performs it and checks its outcome; the
// driver then checks that nothing stored was lost, that hosts outside
// victims kept their verdicts, and that every host is trusted again once
// its agent is honest.
type tamperCase struct {
	name string
	// swtpm marks a case that needs the real TPMs.
	swtpm bool
	// victims are the hosts the attack may change the verdict of.
	victims []string
	// verifies marks an attack whose evidence verifies cryptographically
	// (the policy, or nothing, refuses it): it may replace the victims'
	// stored evidence, as any verified evidence does.
	verifies bool
	// admits marks a case that admits hosts of its own and deletes them
	// before it ends: it may add host.approve and host.delete audit
	// entries.
	admits bool
	run    func(t *testing.T, f *fixture)
}

// TestTamperMatrix attacks one server, case after case: three nodes on
// swtpm (node1 is the golden host, node2 the victim, node3 a bystander
// whose TPM an attacker borrows) and two simulated nodes (sim1 golden,
// sim2 the victim).
func TestTamperMatrix(t *testing.T) {
	f := newFixture(t, integrity.Config{Validity: validity, Timeout: 20 * time.Second})
	// Without swtpm (outside CI) the cases on simulated nodes still run;
	// those that need a real TPM skip one by one.
	haveSWTPM := swtpm.Available() == nil
	if !haveSWTPM && os.Getenv("CI") == "true" {
		needSWTPM(t)
	}
	hosts := []string{"sim1", "sim2"}
	if haveSWTPM {
		f.addNode("node1")
		f.addNode("node2")
		f.addNode("node3")
		hosts = append(hosts, "node1", "node2", "node3")
	}
	f.addSim("sim1")
	f.addSim("sim2")
	// Known-good values from one golden host of each machine model.
	if haveSWTPM {
		f.mustCall("POST", "/v1/golden", map[string]string{"host": "node1", "name": "golden"}, nil)
	}
	f.attest("sim1")
	f.mustCall("POST", "/v1/golden", map[string]string{"host": "sim1", "name": "sim"}, nil)
	for _, h := range hosts {
		if e := f.attest(h); e.Level != verdict.Trusted {
			t.Fatalf("%s before any attack: %+v, want trusted", h, e)
		}
	}

	for _, c := range slices.Concat(tamperCases(), admissionCases(), pushCases()) {
		t.Run(c.name, func(t *testing.T) {
			if c.swtpm && !haveSWTPM {
				needSWTPM(t)
			}
			tf := f.in(t)
			before := tf.snapshot()
			cached := map[string]verdict.Verdict{}
			for _, h := range hosts {
				cached[h], _ = f.srv.Integrity().Cache().Verdict(h)
			}
			// The attacker leaves, even when the case failed: every host is
			// trusted again.
			defer func() {
				for _, n := range f.nodes {
					n.restore(t)
				}
				for _, s := range f.sims {
					s.set(nil)
					s.setCert(s.own)
				}
				for _, h := range hosts {
					if e := tf.attest(h); e.Level != verdict.Trusted {
						t.Errorf("after the attack, honest %s is %s %v, want trusted", h, e.Level, reasonCodes(e.Reasons))
					}
				}
			}()
			c.run(t, tf)

			var mayAttest []string
			if c.verifies {
				mayAttest = c.victims
			}
			tf.checkKept(t, before, c.admits, mayAttest...)
			for _, h := range hosts {
				if slices.Contains(c.victims, h) {
					continue
				}
				if v, _ := f.srv.Integrity().Cache().Verdict(h); v.VTime != cached[h].VTime || v.Level != cached[h].Level {
					t.Errorf("bystander %s changed from %s at %v to %s at %v", h, cached[h].Level, cached[h].VTime, v.Level, v.VTime)
				}
			}
		})
	}
}

// in returns f reporting to t, for use inside a subtest.
func (f *fixture) in(t *testing.T) *fixture {
	c := *f
	c.t = t
	return &c
}

// wantVerdict attests host and checks the answer's level and that one
// reason has code (about pcr in bank, when given).
func (f *fixture) wantVerdict(host string, level verdict.Level, code string, pcr int, bank string) api.PoolEntry {
	f.t.Helper()
	e := f.attest(host)
	if e.Level != level || !hasReason(e.Reasons, code, pcr, bank) {
		f.t.Fatalf("%s: %s %+v, want %s with %s (pcr %d %s)", host, e.Level, e.Reasons, level, code, pcr, bank)
	}
	if v, _ := f.srv.Integrity().Cache().Verdict(host); v.At(f.clock.Now()) != level {
		f.t.Fatalf("%s: the cache says %s, want %s", host, v.At(f.clock.Now()), level)
	}
	return e
}

// quote builds a quoteFunc from a change to the challenge's selection: the
// TPM quotes quoteSel(sel) and the agent reports the values of
// reportSel(sel), then edit may change those values.
func quote(quoteSel, reportSel func([]evidence.Selection) []evidence.Selection, edit func([]evidence.PCR)) quoteFunc {
	return func(t *tpm.TPM, nonce []byte, sel []evidence.Selection, _ quoted) (quoted, error) {
		attest, sig, err := t.Quote(nonce, quoteSel(sel))
		if err != nil {
			return quoted{}, err
		}
		pcrs, err := t.ReadPCRs(reportSel(sel))
		if err != nil {
			return quoted{}, err
		}
		if edit != nil {
			edit(pcrs)
		}
		return quoted{attest: attest, sig: sig, pcrs: pcrs}, nil
	}
}

func same(sel []evidence.Selection) []evidence.Selection { return sel }

func drop(pcrs ...int) func([]evidence.Selection) []evidence.Selection {
	return func(sel []evidence.Selection) []evidence.Selection { return without(sel, pcrs...) }
}

// requote answers with the node's honest evidence whose quote was changed
// by edit and signed again by the node's enrolled AK: a structure the TPM
// would never have signed.
func requote(edit func(*verifytest.Attest)) answerFunc {
	return func(n *verifytest.Node, c *evidence.Challenge) ([]byte, error) {
		ev, err := n.EvidenceFor(c.Nonce, c.Selection)
		if err != nil {
			return nil, err
		}
		a, err := n.AK.NewAttest(c.Nonce, c.Selection, ev.PCRs)
		if err != nil {
			return nil, err
		}
		edit(&a)
		ev.Quote = a.Marshal()
		if ev.Signature, err = n.AK.Sign(ev.Quote); err != nil {
			return nil, err
		}
		return json.Marshal(ev)
	}
}

// evidenceEdit answers with the node's honest evidence changed by edit.
func evidenceEdit(edit func(*evidence.Evidence)) answerFunc {
	return func(n *verifytest.Node, c *evidence.Challenge) ([]byte, error) {
		ev, err := n.EvidenceFor(c.Nonce, c.Selection)
		if err != nil {
			return nil, err
		}
		edit(ev)
		return json.Marshal(ev)
	}
}

// rawAnswer answers every challenge with body.
func rawAnswer(body []byte) answerFunc {
	return func(*verifytest.Node, *evidence.Challenge) ([]byte, error) { return body, nil }
}

// editSRTM makes node2's agent send its SRTM log changed by edit.
func editSRTM(t *testing.T, f *fixture, edit func(t *testing.T, es []eventlog.Event) []eventlog.Event) {
	n := f.nodes["node2"]
	n.writeLogs(t, editLog(t, n.srtm, func(es []eventlog.Event) []eventlog.Event { return edit(t, es) }), n.drtm)
}

// digestsLike returns the digests of data in the banks of like's digests,
// as firmware measures an event that describes itself.
func digestsLike(like eventlog.Event, data string) []eventlog.Digest {
	out := make([]eventlog.Digest, 0, len(like.Digests))
	for _, d := range like.Digests {
		var v []byte
		switch d.Bank {
		case evidence.SHA1:
			s := sha1.Sum([]byte(data))
			v = s[:]
		case evidence.SHA256:
			s := sha256.Sum256([]byte(data))
			v = s[:]
		case evidence.SHA384:
			s := sha512.Sum384([]byte(data))
			v = s[:]
		}
		out = append(out, eventlog.Digest{Bank: d.Bank, Value: v})
	}
	return out
}

func tamperCases() []tamperCase {
	node2 := []string{"node2"}
	sim2 := []string{"sim2"}
	return []tamperCase{
		// A compromised node answers with what its TPM signed earlier.
		{name: "replayed-quote", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			f.nodes["node2"].evil.set(func(_ *tpm.TPM, _ []byte, _ []evidence.Selection, last quoted) (quoted, error) { return last, nil })
			f.wantVerdict("node2", verdict.Untrusted, verdict.CodeNonce, -1, "")
		}},
		// A fresh quote, but over the nonce the server sent node3.
		{name: "nonce-of-another-challenge", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			other := f.nodes["node3"].evil.nonce()
			if len(other) == 0 {
				t.Fatal("node3 was never challenged")
			}
			f.nodes["node2"].evil.set(func(tp *tpm.TPM, _ []byte, sel []evidence.Selection, _ quoted) (quoted, error) {
				return honestQuote(tp, other, sel)
			})
			f.wantVerdict("node2", verdict.Untrusted, verdict.CodeNonce, -1, "")
		}},
		// Cuckoo attack: node2 relays the challenge to node3's clean TPM.
		{name: "quote-by-another-hosts-ak", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			other := f.nodes["node3"].tpm
			f.nodes["node2"].evil.set(func(_ *tpm.TPM, nonce []byte, sel []evidence.Selection, _ quoted) (quoted, error) {
				return honestQuote(other, nonce, sel)
			})
			f.wantVerdict("node2", verdict.Untrusted, verdict.CodeSignature, -1, "")
		}},
		// The TPM quotes without PCR 18 (the hypervisor); the agent still
		// reports a value for it, which no signature covers.
		{name: "pcr-value-outside-quoted-selection", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			f.nodes["node2"].evil.set(quote(drop(18), same, nil))
			f.wantVerdict("node2", verdict.Untrusted, verdict.CodeSelection, 18, "sha256")
		}},
		// The same trick on a PCR the policy does not read: the host stays
		// trusted, and the unsigned value is not among the stored
		// measurements (golden import and previews read those).
		{name: "unsigned-pcr-value-not-stored", swtpm: true, victims: node2, verifies: true, run: func(t *testing.T, f *fixture) {
			forged := bytes.Repeat([]byte{0xaa}, 32)
			f.nodes["node2"].evil.set(quote(drop(6), same, func(ps []evidence.PCR) {
				for i := range ps {
					if ps[i].Index == 6 && ps[i].Bank == evidence.SHA256 {
						ps[i].Digest = forged
					}
				}
			}))
			if e := f.attest("node2"); e.Level != verdict.Trusted {
				t.Fatalf("node2: %+v, want trusted (PCR 6 is not in the policy)", e)
			}
			m := f.measurements("node2")
			if v, ok := m.PCRs[evidence.SHA256][6]; ok {
				t.Fatalf("stored measurements hold PCR 6 = %x, which the quote did not sign", v)
			}
			if _, ok := m.PCRs[evidence.SHA256][18]; !ok {
				t.Fatal("stored measurements lack the quoted PCR 18")
			}
		}},
		{name: "quote-over-fewer-pcrs-than-policy", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			f.nodes["node2"].evil.set(quote(drop(17, 18), drop(17, 18), nil))
			e := f.wantVerdict("node2", verdict.Untrusted, verdict.CodeSelection, 17, "sha256")
			if !hasReason(e.Reasons, verdict.CodeSelection, 18, "sha256") {
				t.Fatalf("no reason for PCR 18: %+v", e.Reasons)
			}
		}},
		// The policy reads sha256; a sha1 quote of the same PCRs is easier
		// to forge a collision for, and is refused.
		{name: "weaker-bank-sha1", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			toSHA1 := func(sel []evidence.Selection) []evidence.Selection {
				var pcrs []int
				for _, s := range sel {
					for _, p := range s.PCRs {
						if !slices.Contains(pcrs, p) {
							pcrs = append(pcrs, p)
						}
					}
				}
				slices.Sort(pcrs)
				return []evidence.Selection{{Bank: evidence.SHA1, PCRs: pcrs}}
			}
			f.nodes["node2"].evil.set(quote(toSHA1, toSHA1, nil))
			e := f.wantVerdict("node2", verdict.Untrusted, verdict.CodeSelection, 0, "sha256")
			if hasReason(e.Reasons, verdict.CodeSelection, -1, "sha1") {
				t.Fatalf("a reason blames sha1, which the policy does not read: %+v", e.Reasons)
			}
		}},
		// The agent reports a PCR value other than the one the TPM signed.
		{name: "reported-pcr-differs-from-quoted", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			f.nodes["node2"].evil.set(quote(same, same, func(ps []evidence.PCR) { ps[0].Digest[0] ^= 1 }))
			f.wantVerdict("node2", verdict.Untrusted, verdict.CodePCRDigest, -1, "")
		}},
		// The log is cut after the boot loader: the rest of PCR 4's chain
		// (grub) and the whole of PCRs 8 and 9 are missing.
		{name: "event-log-truncated", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			editSRTM(t, f, func(t *testing.T, es []eventlog.Event) []eventlog.Event { return es[:len(es)-3] })
			f.wantVerdict("node2", verdict.Untrusted, verdict.CodeReplay, 4, "sha256")
		}},
		// Same events, other order: shim after grub.
		{name: "event-log-reordered", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			editSRTM(t, f, func(t *testing.T, es []eventlog.Event) []eventlog.Event {
				i, j := lastOf(t, es, 4, "shimx64.efi 15.8"), lastOf(t, es, 4, "grubx64.efi 2.06")
				es[i], es[j] = es[j], es[i]
				return es
			})
			f.wantVerdict("node2", verdict.Untrusted, verdict.CodeReplay, 4, "sha256")
		}},
		// An event the TPM never saw: a grub command that loads a module.
		{name: "event-inserted-in-log", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			editSRTM(t, f, func(t *testing.T, es []eventlog.Event) []eventlog.Event {
				i := lastOf(t, es, 8, "")
				ev := eventlog.Event{PCR: 8, Type: eventlog.EvIPL, Digests: digestsLike(es[i], "grub_cmd: insmod rootkit"), Data: []byte("grub_cmd: insmod rootkit")}
				return slices.Insert(es, i+1, ev)
			})
			f.wantVerdict("node2", verdict.Untrusted, verdict.CodeReplay, 8, "sha256")
		}},
		// Only an event's description changes; its digests, which the
		// replay checks, do not. The verdict's claims must not change (the
		// host stays trusted, under the same policy, with no reasons), and
		// the forged text must not be shown as a verified fact: it reaches
		// no verdict, pool entry, host view or reference, and is stored
		// only as the untrusted Data of an event whose digests verified.
		{name: "event-description-changed-digest-kept", swtpm: true, victims: node2, verifies: true, run: func(t *testing.T, f *fixture) {
			const forged = "grub_cmd: linux /boot/vmlinuz-signed-by-vendor root=/dev/sda2 (verified)"
			var want []eventlog.Digest
			editSRTM(t, f, func(t *testing.T, es []eventlog.Event) []eventlog.Event {
				i := lastOf(t, es, 8, "")
				want = es[i].Digests
				es[i].Data = []byte(forged)
				return es
			})
			prev, _ := f.srv.Integrity().Cache().Verdict("node2")
			e := f.attest("node2")
			if e.Level != verdict.Trusted || len(e.Reasons) != 0 || e.Policy != prev.Policy {
				t.Fatalf("node2 after a description change: %+v, want trusted with no reasons under %q", e, prev.Policy)
			}
			for _, path := range []string{"/v1/hosts/node2", "/v1/pool", "/v1/references", "/v1/policies"} {
				code, body := f.call("GET", path, nil)
				if code != http.StatusOK || bytes.Contains(body, []byte("signed-by-vendor")) {
					t.Fatalf("GET %s: %d, shows the forged description: %v", path, code, bytes.Contains(body, []byte("signed-by-vendor")))
				}
			}
			m := f.measurements("node2")
			i := slices.IndexFunc(m.Events, func(e eventlog.Event) bool { return e.PCR == 8 })
			wantD := eventlog.Event{Digests: want}.Digest(evidence.SHA256)
			if i < 0 || wantD == nil || !bytes.Equal(m.Events[i].Digest(evidence.SHA256), wantD) {
				t.Fatalf("stored PCR 8 events %+v, want one with the original sha256 digest %x", m.Events, wantD)
			}
			if string(m.Events[i].Data) != forged {
				t.Fatalf("stored data %q: the description is kept as sent (untrusted)", m.Events[i].Data)
			}
		}},
		{name: "event-log-not-a-tcg-log", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			n := f.nodes["node2"]
			n.writeLogs(t, []byte("this is not an event log"), n.drtm)
			f.wantVerdict("node2", verdict.Untrusted, verdict.CodeEventLog, -1, "")
		}},
		// The DRTM log may only explain PCRs 17-22; here it claims PCR 4.
		{name: "drtm-log-extends-srtm-pcr", swtpm: true, victims: node2, run: func(t *testing.T, f *fixture) {
			n := f.nodes["node2"]
			drtm := editLog(t, n.drtm, func(es []eventlog.Event) []eventlog.Event {
				return append(es, eventlog.Event{PCR: 4, Type: eventlog.EvIPL, Digests: digestsLike(es[0], "x"), Data: []byte("x")})
			})
			n.writeLogs(t, n.srtm, drtm)
			f.wantVerdict("node2", verdict.Untrusted, verdict.CodeEventLog, 4, "")
		}},

		// Simulated nodes: evidence no TPM would sign for this AK.
		{name: "ak-swapped-after-enrollment", victims: sim2, run: func(t *testing.T, f *fixture) {
			fresh, err := verifytest.NewSoftAK(verifytest.RSA2048)
			if err != nil {
				t.Fatal(err)
			}
			f.sims["sim2"].set(func(n *verifytest.Node, c *evidence.Challenge) ([]byte, error) {
				swapped := *n
				swapped.AK = fresh
				return honestAnswer(&swapped, c)
			})
			f.wantVerdict("sim2", verdict.Untrusted, verdict.CodeSignature, -1, "")
		}},
		// A TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY, signed by the AK: the
		// output of TPM2_Certify passed off as a quote.
		{name: "attestation-that-is-not-a-quote", victims: sim2, run: func(t *testing.T, f *fixture) {
			f.sims["sim2"].set(requote(func(a *verifytest.Attest) { a.Type = 0x8017 }))
			f.wantVerdict("sim2", verdict.Untrusted, verdict.CodeQuoteType, -1, "")
		}},
		{name: "quote-names-another-signer", victims: sim2, run: func(t *testing.T, f *fixture) {
			other := f.sims["sim1"].node.AK.Name()
			f.sims["sim2"].set(requote(func(a *verifytest.Attest) { a.QualifiedSigner = verifytest.QualifiedName(other) }))
			f.wantVerdict("sim2", verdict.Untrusted, verdict.CodeSigner, -1, "")
		}},
		{name: "quote-bytes-truncated", victims: sim2, run: func(t *testing.T, f *fixture) {
			f.sims["sim2"].set(evidenceEdit(func(ev *evidence.Evidence) { ev.Quote = ev.Quote[:len(ev.Quote)/2] }))
			f.wantVerdict("sim2", verdict.Untrusted, verdict.CodeMalformed, -1, "")
		}},
		{name: "evidence-not-json", victims: sim2, run: func(t *testing.T, f *fixture) {
			f.sims["sim2"].set(rawAnswer([]byte("<html>trusted, honestly</html>")))
			f.wantVerdict("sim2", verdict.Unknown, verdict.CodeAgentError, -1, "")
		}},
		{name: "evidence-over-size-limit", victims: sim2, run: func(t *testing.T, f *fixture) {
			big := append([]byte(`{"quote":"`), bytes.Repeat([]byte("A"), evidence.MaxBody)...)
			f.sims["sim2"].set(rawAnswer(append(big, `"}`...)))
			e := f.wantVerdict("sim2", verdict.Unknown, verdict.CodeAgentError, -1, "")
			if !strings.Contains(e.Reasons[0].Message, "exceeds") {
				t.Fatalf("reason %q does not name the size limit", e.Reasons[0].Message)
			}
		}},
		// An impostor with a certificate for sim2's name from another CA:
		// the server's TLS check refuses it before sending the challenge.
		{name: "agent-cert-from-another-ca", victims: sim2, run: func(t *testing.T, f *fixture) {
			rogue, err := pki.LoadOrCreateCA(t.TempDir(), f.clock.Now)
			if err != nil {
				t.Fatal(err)
			}
			_, cert := issueCert(t, rogue, "sim2")
			f.sims["sim2"].setCert(cert)
			e := f.wantVerdict("sim2", verdict.Unknown, verdict.CodeUnreachable, -1, "")
			if !strings.Contains(e.Reasons[0].Message, "certificate") {
				t.Fatalf("reason %q does not name the certificate", e.Reasons[0].Message)
			}
		}},
		// A node answering with another enrolled host's genuine certificate.
		{name: "agent-cert-of-another-host", victims: sim2, run: func(t *testing.T, f *fixture) {
			_, cert := f.agentCert("sim1")
			f.sims["sim2"].setCert(cert)
			e := f.wantVerdict("sim2", verdict.Unknown, verdict.CodeUnreachable, -1, "")
			if !strings.Contains(e.Reasons[0].Message, "sim2") {
				t.Fatalf("reason %q does not name the identity expected", e.Reasons[0].Message)
			}
		}},
		// A tampered hypervisor whose log entry still carries the good
		// hypervisor's name: the verdict is decided on digests.
		{name: "tampered-hypervisor-with-known-good-description", victims: sim2, verifies: true, run: func(t *testing.T, f *fixture) {
			n := f.sims["sim2"].node
			tampered := editLog(t, n.DRTMLog, func(es []eventlog.Event) []eventlog.Event {
				i := lastOf(t, es, 18, "kvm-6.1.0-28-amd64")
				es[i].Digests = digestsLike(es[i], "kvm-6.1.0-28-amd64 with a backdoor")
				return es
			})
			f.sims["sim2"].set(func(n *verifytest.Node, c *evidence.Challenge) ([]byte, error) {
				booted := *n
				booted.DRTMLog = tampered // the node's PCRs replay its logs
				return honestAnswer(&booted, c)
			})
			f.wantVerdict("sim2", verdict.Untrusted, verdict.CodePCRMismatch, 18, "sha256")
		}},

		// Requests the API must refuse.
		{name: "hello-as-another-host", victims: []string{"sim1"}, verifies: true, run: func(t *testing.T, f *fixture) {
			sim1 := f.sims["sim1"].own
			rogue, err := pki.LoadOrCreateCA(t.TempDir(), f.clock.Now)
			if err != nil {
				t.Fatal(err)
			}
			_, forged := issueCert(t, rogue, "sim2")
			for _, h := range []struct {
				name string
				cert *tls.Certificate
				host string
				want int
			}{
				{"sim1's certificate, hello as sim2", sim1, "sim2", http.StatusUnauthorized},
				{"sim1's certificate, hello as node2", sim1, "node2", http.StatusUnauthorized},
				{"no certificate", nil, "sim2", http.StatusUnauthorized},
				{"sim1's certificate as itself (control)", sim1, "sim1", http.StatusAccepted},
			} {
				if code, err := f.hello(h.cert, h.host); err != nil || code != h.want {
					t.Errorf("%s: %d %v, want %d", h.name, code, err, h.want)
				}
			}
			// A certificate from another CA does not get through TLS.
			if code, err := f.hello(forged, "sim2"); err == nil {
				t.Errorf("hello with a certificate from another CA: %d, want a refused handshake", code)
			}
		}},
		{name: "enroll-with-ek-bound-to-another-host", swtpm: true, run: func(t *testing.T, f *fixture) {
			node2 := f.nodes["node2"]
			// Refused once the caller proved it holds the EK (activation),
			// not before: the request alone tells nothing.
			if code, body := f.enrollWith(t, node2.tpm, "intruder", ""); code != http.StatusConflict {
				t.Errorf("node2's EK under the name intruder: %d %s, want 409 at activation", code, body)
			}
			// A new machine claims node2's name with a join token for it (the
			// operator's mistake): refused. Without one it would only wait
			// (enrolled-names-not-revealed).
			var tok struct{ Token string }
			f.mustCall("POST", "/v1/join-tokens", map[string]string{"host": "node2"}, &tok)
			if code, body := f.beginEnroll(t, f.freshTPM(t), "node2", tok.Token); code != http.StatusConflict {
				t.Errorf("another TPM under the name node2 with a join token: %d %s, want 409", code, body)
			}
		}},
		{name: "join-token-reused", swtpm: true, run: func(t *testing.T, f *fixture) {
			n := f.nodes["node2"]
			if code, body := f.beginEnroll(t, n.tpm, "node2", n.token); code != http.StatusForbidden || !strings.Contains(string(body), "already used") {
				t.Fatalf("enrollment with node2's used join token: %d %s, want 403 already used", code, body)
			}
		}},
		{name: "join-token-expired", swtpm: true, run: func(t *testing.T, f *fixture) {
			var tok struct{ Token string }
			f.mustCall("POST", "/v1/join-tokens", map[string]string{"host": "node2", "ttl": "1m"}, &tok)
			f.clock.Add(2 * time.Minute)
			if code, body := f.beginEnroll(t, f.nodes["node2"].tpm, "node2", tok.Token); code != http.StatusForbidden || !strings.Contains(string(body), "expired") {
				t.Fatalf("enrollment with an expired join token: %d %s, want 403 expired", code, body)
			}
		}},
		{name: "join-token-of-another-host", swtpm: true, run: func(t *testing.T, f *fixture) {
			var tok struct{ Token string }
			f.mustCall("POST", "/v1/join-tokens", map[string]string{"host": "node3"}, &tok)
			if code, body := f.beginEnroll(t, f.nodes["node2"].tpm, "node2", tok.Token); code != http.StatusForbidden || !strings.Contains(string(body), "another host") {
				t.Fatalf("enrollment with node3's join token: %d %s, want 403 another host", code, body)
			}
		}},
		// No attestation for longer than the validity: every scheduler
		// interface reads unknown, although the stored levels are trusted.
		{name: "expired-verdict-read-by-schedulers", victims: []string{"sim1", "sim2", "node1", "node2", "node3"}, run: func(t *testing.T, f *fixture) {
			f.clock.Add(validity)
			var names []string
			for _, h := range f.snapshot().hosts {
				names = append(names, h.Name)
			}
			req := f.request("POST", nova.PrefixNova+"/PollHosts", map[string]any{"count": len(names), "hosts": names})
			req.Header.Del("Authorization")
			req.Header.Set("x-auth-blob", f.novaBlob)
			var poll struct {
				Hosts []struct {
					Name  string        `json:"host_name"`
					Level verdict.Level `json:"trust_lvl"`
				}
			}
			if code, body := f.send(req, nil); code != http.StatusOK || json.Unmarshal(body, &poll) != nil || len(poll.Hosts) != len(names) {
				t.Fatalf("PollHosts: %d %s", code, body)
			}
			for _, h := range poll.Hosts {
				if h.Level != verdict.Unknown {
					t.Errorf("PollHosts says %s is %s past its verdict's expiry, want unknown", h.Name, h.Level)
				}
			}
			var filtered struct {
				Hosts    []string
				Rejected []struct{ Host, Reason string }
			}
			f.mustCall("POST", "/v1/filter", map[string]any{"extra_specs": map[string]string{"trust:trusted_host": "trusted"}, "hosts": names}, &filtered)
			if len(filtered.Hosts) != 0 || len(filtered.Rejected) != len(names) || !strings.Contains(filtered.Rejected[0].Reason, "unknown") {
				t.Errorf("/v1/filter for trusted past expiry: %+v, want every host rejected as unknown", filtered)
			}
			var pool api.Pool
			f.mustCall("GET", "/v1/pool", nil, &pool)
			for _, e := range pool.Hosts {
				if e.Level != verdict.Unknown || !hasReason(e.Reasons, verdict.CodeExpired, -1, "") {
					t.Errorf("/v1/pool: %s is %s %v, want unknown with %s", e.Host, e.Level, reasonCodes(e.Reasons), verdict.CodeExpired)
				}
			}
		}},
		{name: "missing-or-wrong-credential", run: func(t *testing.T, f *fixture) {
			f.missingCredential(t)
		}},
		{name: "credential-of-another-role", run: func(t *testing.T, f *fixture) {
			f.wrongRole(t)
		}},
		{name: "malformed-and-oversized-bodies", run: func(t *testing.T, f *fixture) {
			f.badBodies(t)
		}},
	}
}

// measurements decodes host's stored verified measurements.
func (f *fixture) measurements(host string) verify.Measurements {
	f.t.Helper()
	rec, err := f.srv.Store().LatestEvidence(f.ctx, host)
	if err != nil {
		f.t.Fatal(err)
	}
	var m verify.Measurements
	if err := json.Unmarshal(rec.Measurements, &m); err != nil {
		f.t.Fatal(err)
	}
	return m
}
