package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"trustpool/internal/evidence"
	"trustpool/internal/httpjson"
	"trustpool/internal/problem"
	"trustpool/internal/store"
)

// getEvidence answers GET /v1/hosts/{name}/evidence: the host's latest
// verified attestation as an evidence bundle, which `trustpool verify
// --bundle` checks offline as the server did.
func (a *API) getEvidence(w http.ResponseWriter, r *http.Request) {
	h, ok := a.host(w, r)
	if !ok {
		return
	}
	rec, err := a.cfg.Store.LatestEvidence(r.Context(), h.Name)
	if errors.Is(err, store.ErrNotFound) {
		err = problem.New(problem.NotFound, "host %q has no verified evidence", h.Name)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	b, err := EvidenceBundle(h, rec)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpjson.JSON(w, http.StatusOK, b)
}

// EvidenceBundle is the bundle of one stored attestation: the evidence the
// agent sent, the nonce it answered and the AK the server holds for the host
// (its latest admission's; evidence from before a re-enrollment does not
// verify under it, which `verify --bundle` then reports). The challenge's
// required selection is not stored and is left out: `verify --bundle
// --policy` requires what that policy reads.
func EvidenceBundle(h store.Host, rec store.EvidenceRecord) (*evidence.Bundle, error) {
	var ev evidence.Evidence
	if err := json.Unmarshal(rec.Evidence, &ev); err != nil {
		return nil, fmt.Errorf("stored evidence of %s: %w", h.Name, err)
	}
	b := &evidence.Bundle{Host: h.Name, AKPublic: h.AKPublic, Nonce: rec.Nonce, Evidence: &ev}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("stored evidence of %s: %w", h.Name, err)
	}
	return b, nil
}
