package evidence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxAKPublic bounds a bundle's AK public area: a TPMT_PUBLIC of an RSA-4096
// key with a policy digest is well under 1 KiB.
const MaxAKPublic = 2 << 10

// Bundle is one attestation, self-contained, for checking offline
// (`trustpool verify --bundle`): the AK public area the server admitted at
// enrollment, the challenge's nonce and the PCRs its policy required, and
// the agent's answer. Checking a bundle trusts its AK and nonce as the
// server trusts its own records of them: a bundle proves only that the
// evidence is consistent with that AK and nonce, so whoever hands over a
// bundle must be trusted for those two fields.
type Bundle struct {
	// Host names the attester, for people; nothing checks it.
	Host string `json:"host,omitempty"`
	// AKPublic is the AK's TPMT_PUBLIC, as the agent enrolled it.
	AKPublic []byte `json:"ak_public"`
	// Nonce is the challenge's nonce.
	Nonce []byte `json:"nonce"`
	// Required lists the PCRs the challenge asked the quote to cover.
	Required []Selection `json:"required,omitempty"`
	// Evidence is the agent's answer (quote, signature, PCRs, event logs).
	Evidence *Evidence `json:"evidence"`
}

// Validate bounds the bundle's own fields; the evidence's shape is judged by
// verification, where a bad shape is a result, not an error.
func (b *Bundle) Validate() error {
	var errs []error
	if len(b.AKPublic) == 0 || len(b.AKPublic) > MaxAKPublic {
		errs = append(errs, fmt.Errorf("ak_public is %d bytes, want 1 to %d", len(b.AKPublic), MaxAKPublic))
	}
	if len(b.Nonce) == 0 || len(b.Nonce) > MaxNonce {
		errs = append(errs, fmt.Errorf("nonce is %d bytes, want 1 to %d", len(b.Nonce), MaxNonce))
	}
	for _, s := range b.Required {
		if err := s.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("required: %w", err))
		}
	}
	if b.Evidence == nil {
		errs = append(errs, errors.New("no evidence"))
	}
	return errors.Join(errs...)
}

// maxBundle bounds a whole bundle document: the evidence plus the AK and
// nonce, base64 encoded.
const maxBundle = MaxBody + 4*MaxAKPublic

// DecodeBundle reads one JSON bundle strictly: unknown fields, trailing data
// and documents over the size limit are refused, and the result is valid.
func DecodeBundle(r io.Reader) (*Bundle, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxBundle+1))
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	if len(raw) > maxBundle {
		return nil, fmt.Errorf("read bundle: over %d bytes", maxBundle)
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	var b Bundle
	if err := d.Decode(&b); err != nil {
		return nil, fmt.Errorf("decode bundle: %w", err)
	}
	if d.More() {
		return nil, errors.New("decode bundle: data after the JSON object")
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	return &b, nil
}
