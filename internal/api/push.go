package api

import (
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"time"

	"trustpool/internal/evidence"
	"trustpool/internal/httpjson"
	"trustpool/internal/problem"
	"trustpool/internal/store"
)

// Push mode's routes (package integrity's PushChallenge, PushEvidence and
// Wait): an agent that opens no port fetches a challenge, posts its
// evidence and long-polls, each time over mutual TLS with the certificate
// admitted for its host.

// PushWaitMax is how long POST /v1/push/wait holds at most: under the
// usual 60 s idle timeouts of proxies and NAT gateways.
const PushWaitMax = 55 * time.Second

// PushVerdict is the server's answer to pushed evidence: the verdict and
// when to push again.
type PushVerdict struct {
	PoolEntry
	Next time.Time `json:"next"`
	// NextIn is Next as a delay in seconds from the answer, for agents
	// whose clock is off.
	NextIn float64 `json:"next_in"`
}

// agent returns the host named, when the TLS peer presented the
// certificate admitted for it, or answers 401: only a host's own agent says
// hello, fetches its challenges and posts its evidence.
func (a *API) agent(w http.ResponseWriter, r *http.Request, name string) (store.Host, bool) {
	name = strings.ToLower(name)
	h, err := a.cfg.Store.GetHost(r.Context(), name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		a.fail(w, r, err)
		return h, false
	}
	if r.TLS == nil || err != nil || a.cfg.VerifyPeer(r.TLS.PeerCertificates, h.Name, h.AgentCert, x509.ExtKeyUsageClientAuth) != nil {
		a.fail(w, r, problem.New(problem.Unauthorized, "this call needs the agent certificate admitted for %q", name))
		return h, false
	}
	return h, true
}

// agentOfBody is agent for a request whose body is {"host": NAME}.
func (a *API) agentOfBody(w http.ResponseWriter, r *http.Request) (store.Host, bool) {
	var req evidence.PushHost
	if err := httpjson.Decode(w, r, 1<<10, &req); err != nil {
		a.fail(w, r, err)
		return store.Host{}, false
	}
	return a.agent(w, r, req.Host)
}

func (a *API) pushChallenge(w http.ResponseWriter, r *http.Request) {
	h, ok := a.agentOfBody(w, r)
	if !ok {
		return
	}
	c, err := a.cfg.Integrity.PushChallenge(r.Context(), h.Name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpjson.JSON(w, http.StatusOK, c)
}

func (a *API) pushEvidence(w http.ResponseWriter, r *http.Request) {
	var req evidence.PushEvidence
	if err := httpjson.Decode(w, r, evidence.MaxBody+4<<10, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	h, ok := a.agent(w, r, req.Host)
	if !ok {
		return
	}
	if req.Evidence == nil {
		a.fail(w, r, problem.New(problem.Invalid, "evidence is required"))
		return
	}
	if err := req.Evidence.Validate(); err != nil {
		a.fail(w, r, problem.Wrap(problem.Invalid, err, "invalid evidence: %v", err))
		return
	}
	res, err := a.cfg.Integrity.PushEvidence(r.Context(), h.Name, req.Nonce, req.Evidence)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	now := a.cfg.Now()
	httpjson.JSON(w, http.StatusOK, PushVerdict{
		PoolEntry: entryOf(h.Name, res.Verdict, res.Verdict.At(now)),
		Next:      res.Next.UTC(), NextIn: max(0, res.Next.Sub(now).Seconds()),
	})
}

// pushWait holds the agent's request until the server wants a fresh quote
// from it, or PushWaitMax passes.
func (a *API) pushWait(w http.ResponseWriter, r *http.Request) {
	h, ok := a.agentOfBody(w, r)
	if !ok {
		return
	}
	// The server's write timeout is shorter than a long-poll.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(PushWaitMax + 10*time.Second))
	httpjson.JSON(w, http.StatusOK, evidence.PushWaitAnswer{Attest: a.cfg.Integrity.Wait(r.Context(), h.Name, PushWaitMax)})
}
