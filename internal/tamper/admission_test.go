package tamper_test

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"trustpool/internal/agent/swtpm"
	"trustpool/internal/agent/tpm"
	"trustpool/internal/enroll"
	"trustpool/internal/evidence"
	"trustpool/internal/integrity"
	"trustpool/internal/server"
	"trustpool/internal/store"
	"trustpool/internal/verdict"
	"trustpool/internal/verify/verifytest"
)

// freshTPM starts a new swtpm: a machine the server has never seen.
func (f *fixture) freshTPM(t *testing.T) *tpm.TPM {
	t.Helper()
	p, err := swtpm.Start(f.ctx, swtpm.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop() })
	tp, err := tpm.Open(p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// ekFingerprint is what an operator approves: the hex SHA-256 of tp's EK.
func ekFingerprint(t *testing.T, tp *tpm.TPM) string {
	t.Helper()
	ek, _, err := tp.EK()
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(store.EKHash(ek))
}

func decodeAdmitted(t *testing.T, body []byte) evidence.Admitted {
	t.Helper()
	var adm evidence.Admitted
	if err := json.Unmarshal(body, &adm); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return adm
}

// deleteHosts removes the hosts a case admitted, so that the driver finds
// the store as it was.
func (f *fixture) deleteHosts(names ...string) {
	for _, n := range names {
		if code, body := f.call("DELETE", "/v1/hosts/"+n, nil); code != http.StatusNoContent && code != http.StatusNotFound {
			f.t.Errorf("delete %s: %d %s", n, code, body)
		}
	}
}

// admissionCases stop a node from getting an identity it was not given:
// a certificate without admission, a name it does not own, a certificate
// that outlives its admission, the server's own identity.
func admissionCases() []tamperCase {
	sim2 := []string{"sim2"}
	return []tamperCase{
		// Hole: a TPM that enrolled with no token and no approval was issued
		// a certificate, with an IP SAN from its self-reported URL, that
		// passed as the server.
		{name: "pending-tpm-gets-no-certificate", swtpm: true, run: func(t *testing.T, f *fixture) {
			tp := f.freshTPM(t)
			code, body := f.beginEnroll(t, tp, "evil.example", "", func(r *evidence.EnrollRequest) { r.URL = f.srv.URL() })
			if code != http.StatusOK {
				t.Fatalf("enrollment request: %d %s", code, body)
			}
			code, body = f.activate(t, tp, body)
			adm := decodeAdmitted(t, body)
			if code != http.StatusOK || adm.State != evidence.EnrollPending || len(adm.Cert) != 0 || adm.Poll == "" {
				t.Fatalf("activation without admission: %d %s, want pending with no certificate", code, body)
			}
			if _, err := f.srv.Store().GetHost(f.ctx, "evil.example"); err == nil {
				t.Fatal("a pending TPM owns a host")
			}
			req := f.request("POST", "/v1/enroll/poll", evidence.EnrollPoll{Poll: adm.Poll})
			req.Header.Del("Authorization")
			if code, body := f.send(req, nil); code != http.StatusAccepted || strings.Contains(string(body), "BEGIN CERTIFICATE") {
				t.Fatalf("poll while pending: %d %s, want 202 and no certificate", code, body)
			}
		}},
		// Hole: agent certificates carried an IP SAN, so an agent enrolled
		// with the server's address as its URL could serve as the server.
		{name: "agent-certificate-names-only-its-host", run: func(t *testing.T, f *fixture) {
			h, err := f.srv.Store().GetHost(f.ctx, "sim1")
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(h.AgentCert)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil || !slices.Equal(cert.DNSNames, []string{"sim1"}) || len(cert.IPAddresses) != 0 {
				t.Fatalf("sim1's certificate names %v %v (%v), want exactly sim1", cert.DNSNames, cert.IPAddresses, err)
			}
		}},
		// Hole: an agent accepted any certificate from the CA as the server.
		// sim1's genuine certificate plays the server to node2's agent,
		// challenging it: the agent refuses the handshake.
		{name: "agent-challenged-by-another-agent", swtpm: true, run: func(t *testing.T, f *fixture) {
			sim1 := f.sims["sim1"].own
			h, err := f.srv.Store().GetHost(f.ctx, "node2")
			if err != nil {
				t.Fatal(err)
			}
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
				Certificates: []tls.Certificate{*sim1}, InsecureSkipVerify: true, // the attacker trusts anyone
			}}}
			resp, err := c.Post(h.URL+"/v1/quote", "application/json", strings.NewReader(`{"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","selection":[{"bank":"sha256","pcrs":[0]}]}`))
			if err == nil {
				resp.Body.Close()
				t.Fatalf("node2's agent answered a challenge from sim1's certificate: %s", resp.Status)
			}
		}},
		// Hole: identity checks used x509 name matching, which ignores case;
		// and any certificate the CA issued for the name passed. Only the
		// pinned one does now.
		{name: "agent-cert-for-another-spelling-of-its-name", victims: sim2, run: func(t *testing.T, f *fixture) {
			_, cert := f.agentCert("SIM2")
			f.sims["sim2"].setCert(cert)
			f.wantVerdict("sim2", verdict.Unknown, verdict.CodeUnreachable, -1, "")
		}},
		{name: "agent-cert-not-the-one-admitted", victims: sim2, run: func(t *testing.T, f *fixture) {
			_, cert := f.agentCert("sim2") // genuine CA, right name, never admitted
			f.sims["sim2"].setCert(cert)
			e := f.wantVerdict("sim2", verdict.Unknown, verdict.CodeUnreachable, -1, "")
			if !strings.Contains(e.Reasons[0].Message, "admitted") {
				t.Fatalf("reason %q does not say the certificate is not the admitted one", e.Reasons[0].Message)
			}
			if code, err := f.hello(cert, "sim2"); err != nil || code != http.StatusUnauthorized {
				t.Fatalf("hello with it: %d %v, want 401", code, err)
			}
		}},
		// Hole: a TPM enrolling first under a name (pending) blocked the
		// real node's token-backed enrollment with 409, and the operator's
		// approval could not tell the two TPMs apart.
		{name: "pending-squatter-does-not-block-the-real-node", swtpm: true, admits: true, run: func(t *testing.T, f *fixture) {
			squatter, real := f.freshTPM(t), f.freshTPM(t)
			if code, body := f.enrollWith(t, squatter, "node4", ""); code != http.StatusOK || decodeAdmitted(t, body).State != evidence.EnrollPending {
				t.Fatalf("squatter: %d %s, want pending", code, body)
			}
			defer f.deleteHosts("node4")
			var tok struct{ Token string }
			f.mustCall("POST", "/v1/join-tokens", map[string]string{"host": "node4"}, &tok)
			if code, body := f.enrollWith(t, real, "node4", tok.Token); code != http.StatusOK || decodeAdmitted(t, body).State != evidence.EnrollAdmitted {
				t.Fatalf("the real node with its join token: %d %s, want admitted", code, body)
			}
			var pending []enroll.PendingView
			f.mustCall("GET", "/v1/pending", nil, &pending)
			i := slices.IndexFunc(pending, func(p enroll.PendingView) bool { return p.Host == "node4" })
			if i < 0 || pending[i].EKFingerprint != ekFingerprint(t, squatter) || pending[i].Source == "" {
				t.Fatalf("pending list %+v does not show the squatter's EK", pending)
			}
			if code, body := f.call("POST", "/v1/hosts/node4/approve", map[string]string{"ek_fingerprint": pending[i].EKFingerprint}); code != http.StatusConflict {
				t.Fatalf("approving the squatter over the admitted node: %d %s, want 409", code, body)
			}
			h, _ := f.srv.Store().GetHost(f.ctx, "node4")
			if hex.EncodeToString(store.EKHash(h.EKPublic)) != ekFingerprint(t, real) {
				t.Fatal("node4 is not bound to the real node's EK")
			}
		}},
		// Hole: a 409 told anyone which names were enrolled. Without the
		// name's join token, an enrolled name and a new one get the same
		// answer: pending.
		{name: "enrolled-names-not-revealed", swtpm: true, run: func(t *testing.T, f *fixture) {
			tp := f.freshTPM(t)
			for _, name := range []string{"node2", "never-enrolled"} {
				code, body := f.enrollWith(t, tp, name, "")
				if code != http.StatusOK || decodeAdmitted(t, body).State != evidence.EnrollPending {
					t.Errorf("another TPM as %s: %d %s, want pending like any name", name, code, body)
				}
			}
		}},
		// Hole: the EK/name check and the host write were separate
		// statements; two activations for one new name with different EKs
		// could both pass.
		{name: "two-tpms-racing-for-one-name", swtpm: true, admits: true, run: func(t *testing.T, f *fixture) {
			tps := []*tpm.TPM{f.freshTPM(t), f.freshTPM(t)}
			defer f.deleteHosts("node5")
			creds := make([][]byte, len(tps))
			for i, tp := range tps {
				var tok struct{ Token string }
				f.mustCall("POST", "/v1/join-tokens", map[string]string{"host": "node5"}, &tok)
				code, body := f.beginEnroll(t, tp, "node5", tok.Token)
				if code != http.StatusOK {
					t.Fatalf("request %d: %d %s", i, code, body)
				}
				creds[i] = body
			}
			codes := make([]int, len(tps))
			var wg sync.WaitGroup
			for i, tp := range tps {
				wg.Go(func() { codes[i], _ = f.activate(t, tp, creds[i]) })
			}
			wg.Wait()
			slices.Sort(codes)
			if !slices.Equal(codes, []int{http.StatusOK, http.StatusConflict}) {
				t.Fatalf("two TPMs activating for node5 at once: %v, want one 200 and one 409", codes)
			}
		}},
		// Hole: the server never pinned a host's certificate, so a deleted
		// or re-enrolled host's old certificate kept working.
		{name: "old-certificate-after-reenrollment-or-deletion", swtpm: true, admits: true, run: func(t *testing.T, f *fixture) {
			tp := f.freshTPM(t)
			defer f.deleteHosts("node6")
			var tok struct{ Token string }
			f.mustCall("POST", "/v1/join-tokens", map[string]string{"host": "node6"}, &tok)
			_, _, first := f.enrollKeyed(t, tp, "node6", tok.Token)
			_, _, second := f.enrollKeyed(t, tp, "node6", "") // the same TPM again: re-admitted
			if first == nil || second == nil {
				t.Fatal("node6 was not admitted twice")
			}
			for _, h := range []struct {
				name string
				cert *tls.Certificate
				want int
			}{{"the replaced certificate", first, http.StatusUnauthorized}, {"the current certificate", second, http.StatusAccepted}} {
				if code, err := f.hello(h.cert, "node6"); err != nil || code != h.want {
					t.Errorf("hello with %s: %d %v, want %d", h.name, code, err, h.want)
				}
			}
			f.deleteHosts("node6")
			if code, err := f.hello(second, "node6"); err != nil || code != http.StatusUnauthorized {
				t.Errorf("hello after deletion: %d %v, want 401", code, err)
			}
		}},
		// Keylime CVE-2023-38201 (registration bypass): node2's own TPM,
		// with a join token, cannot re-register node2 with an AK that did not
		// pass activation; its stored AK stays (the driver checks).
		{name: "reregister-with-an-ak-that-never-activated", swtpm: true, run: func(t *testing.T, f *fixture) {
			soft, err := verifytest.NewSoftAK(verifytest.RSA2048)
			if err != nil {
				t.Fatal(err)
			}
			var tok struct{ Token string }
			f.mustCall("POST", "/v1/join-tokens", map[string]string{"host": "node2"}, &tok)
			code, body := f.beginEnroll(t, f.nodes["node2"].tpm, "node2", tok.Token, func(r *evidence.EnrollRequest) { r.AKPublic = soft.Public() })
			if code != http.StatusOK {
				t.Fatalf("request: %d %s", code, body)
			}
			var cred evidence.EnrollCredential
			if err := json.Unmarshal(body, &cred); err != nil {
				t.Fatal(err)
			}
			if _, err := f.nodes["node2"].tpm.ActivateCredential(cred.CredentialBlob, cred.EncryptedSecret); err == nil {
				t.Fatal("the TPM activated a credential for an AK it does not hold")
			}
			req := f.request("POST", "/v1/enroll/activate", evidence.EnrollActivation{ID: cred.ID, Secret: make([]byte, 32)})
			req.Header.Del("Authorization")
			if code, body := f.send(req, nil); code != http.StatusForbidden {
				t.Fatalf("activation with a guessed secret: %d %s, want 403", code, body)
			}
		}},
		// Hole: EK certificates were stored unparsed without a CA bundle
		// (up to 8 KiB a row).
		{name: "ek-certificate-garbage-or-oversized", swtpm: true, run: func(t *testing.T, f *fixture) {
			tp := f.freshTPM(t)
			for name, cert := range map[string][]byte{"garbage": []byte(strings.Repeat("x", 1000)), "oversized": make([]byte, 4<<10)} {
				if code, body := f.beginEnroll(t, tp, "node7", "", func(r *evidence.EnrollRequest) { r.EKCert = cert }); code != http.StatusBadRequest {
					t.Errorf("%s EK certificate: %d %s, want 400", name, code, body)
				}
			}
		}},
		// The stored evidence is the agent's document byte for byte (here
		// indented, which no re-encoding would give back), with its
		// SHA-256: what was verified is what is kept. Evidence is stored
		// in full when the measurements change, so the agent quotes one
		// PCR more than asked (PCR 23, which no policy reads); its next
		// attestation, measuring the same, keeps those bytes.
		{name: "evidence-stored-as-received", victims: sim2, verifies: true, run: func(t *testing.T, f *fixture) {
			var sent [][]byte
			f.sims["sim2"].set(func(n *verifytest.Node, c *evidence.Challenge) ([]byte, error) {
				sel := slices.Clone(c.Selection)
				sel[0].PCRs = append(slices.Clone(sel[0].PCRs), 23)
				ev, err := n.EvidenceFor(c.Nonce, sel)
				if err != nil {
					return nil, err
				}
				b, err := json.MarshalIndent(ev, "", "  ")
				sent = append(sent, b)
				return b, err
			})
			for range 2 {
				if e := f.attest("sim2"); e.Level != verdict.Trusted {
					t.Fatalf("sim2 with indented evidence: %s %v, want trusted", e.Level, reasonCodes(e.Reasons))
				}
			}
			rec, err := f.srv.Store().LatestEvidence(f.ctx, "sim2")
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(sent[0])
			if len(sent) != 2 || bytes.Equal(sent[0], sent[1]) || !bytes.Equal(rec.Evidence, sent[0]) || !bytes.Equal(rec.ContentHash, sum[:]) {
				t.Fatalf("stored evidence (%d bytes, hash %x) is not the %d bytes first sent (hash %x)", len(rec.Evidence), rec.ContentHash, len(sent[0]), sum)
			}
		}},
		// Hole: the evidence decoder took the last of two members of one
		// name and matched names in any case, so the document stored (and
		// exported) could read differently to another parser than to the
		// verifier. Both are refused now, as an agent error.
		{name: "evidence-two-parsers-read-differently", victims: sim2, run: func(t *testing.T, f *fixture) {
			for name, edit := range map[string][2]string{
				"duplicate member":     {`{"quote":`, `{"quote":"AAAA","quote":`},
				"member in other case": {`"signature":`, `"Signature":`},
			} {
				f.sims["sim2"].set(func(n *verifytest.Node, c *evidence.Challenge) ([]byte, error) {
					ev, err := n.EvidenceFor(c.Nonce, c.Selection)
					if err != nil {
						return nil, err
					}
					b, err := json.Marshal(ev)
					if !bytes.Contains(b, []byte(edit[0])) {
						t.Fatalf("%s: %q not in the evidence", name, edit[0])
					}
					return bytes.Replace(b, []byte(edit[0]), []byte(edit[1]), 1), err
				})
				if e := f.attest("sim2"); e.Level == verdict.Trusted || !slices.Contains(reasonCodes(e.Reasons), verdict.CodeAgentError) {
					t.Errorf("evidence with a %s: %s %v, want agent-error", name, e.Level, reasonCodes(e.Reasons))
				}
			}
		}},
		{name: "server-name-or-ip-as-host-name", swtpm: true, run: func(t *testing.T, f *fixture) {
			tp := f.freshTPM(t)
			host, _, _ := net.SplitHostPort(f.srv.Addr())
			for name, want := range map[string]int{"localhost": http.StatusForbidden, host: http.StatusBadRequest, "LocalHost": http.StatusForbidden} {
				if code, body := f.beginEnroll(t, tp, name, ""); code != want {
					t.Errorf("enrolling as %s: %d %s, want %d", name, code, body, want)
				}
			}
		}},
	}
}

// Hole: pending enrollments were never deleted and not capped, so a flood
// filled the disk. Waiting requests beyond the cap get 429, expire, and
// are deleted; a join token still gets through the cap.
func TestPendingFlood(t *testing.T) {
	needSWTPM(t)
	f := newFixture(t, integrity.Config{}, func(c *server.Config) {
		c.MaxPending, c.PendingTTL, c.EnrollSweep = 3, time.Minute, 50*time.Millisecond
	})
	tp := f.freshTPM(t)
	for i := range 3 {
		if code, body := f.beginEnroll(t, tp, fmt.Sprintf("flood%d", i), ""); code != http.StatusOK {
			t.Fatalf("request %d under the cap: %d %s", i, code, body)
		}
	}
	if code, body := f.beginEnroll(t, tp, "flood3", ""); code != http.StatusTooManyRequests {
		t.Fatalf("request past the cap: %d %s, want 429", code, body)
	}
	var tok struct{ Token string }
	f.mustCall("POST", "/v1/join-tokens", map[string]string{"host": "real"}, &tok)
	if code, body := f.beginEnroll(t, tp, "real", tok.Token); code != http.StatusOK {
		t.Fatalf("a token-backed request past the cap: %d %s", code, body)
	}
	f.clock.Add(enroll.TTL + time.Second)
	waitFor(t, "expired enrollments deleted", func() bool {
		n, err := f.srv.Store().CountWaiting(f.ctx, time.Time{})
		return err == nil && n == 0
	})
	if code, body := f.beginEnroll(t, tp, "flood4", ""); code != http.StatusOK {
		t.Fatalf("after expiry: %d %s", code, body)
	}
}
