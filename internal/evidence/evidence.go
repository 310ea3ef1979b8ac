// Package evidence holds the wire types that the trust agent and the attestation
// server exchange: the server's challenge and the agent's answer. Nothing in an
// Evidence is trusted until package verify has checked it against the node's AK
// and the challenge's nonce; Validate only bounds sizes and shapes so that a
// hostile peer cannot make the server parse unbounded input.
package evidence

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	jsonv2 "github.com/go-json-experiment/json"
)

// Size limits for agent-supplied bytes. A TPMS_ATTEST for a quote is a few
// hundred bytes and a real firmware event log tens of KiB; the limits leave
// room for real hosts and nothing more.
const (
	MaxQuote     = 2 << 10
	MaxSignature = 2 << 10
	MaxEventLog  = 2 << 20
	MaxNonce     = 64
	MinNonce     = 16
	NumPCRs      = 24
	// MaxBody bounds a whole JSON evidence document (base64 inflates by 4/3).
	MaxBody = 4 << 20
)

// Bank names a PCR bank by its hash algorithm.
type Bank string

// The banks trustpool understands, weakest first.
const (
	SHA1   Bank = "sha1"
	SHA256 Bank = "sha256"
	SHA384 Bank = "sha384"
)

// Banks lists the known banks from weakest to strongest.
var Banks = []Bank{SHA1, SHA256, SHA384}

// Size is the digest length of the bank's hash, or 0 for an unknown bank.
func (b Bank) Size() int {
	switch b {
	case SHA1:
		return 20
	case SHA256:
		return 32
	case SHA384:
		return 48
	}
	return 0
}

// AlgID is the TPM_ALG_ID of the bank's hash, or 0 for an unknown bank.
func (b Bank) AlgID() uint16 {
	switch b {
	case SHA1:
		return 0x0004
	case SHA256:
		return 0x000B
	case SHA384:
		return 0x000C
	}
	return 0
}

// BankForAlg maps a TPM_ALG_ID to a bank; ok is false for an unknown algorithm.
func BankForAlg(alg uint16) (b Bank, ok bool) {
	for _, b := range Banks {
		if b.AlgID() == alg {
			return b, true
		}
	}
	return "", false
}

// Selection is a set of PCR indices in one bank.
type Selection struct {
	Bank Bank  `json:"bank"`
	PCRs []int `json:"pcrs"`
}

// Validate reports whether the selection names a known bank and valid, distinct PCRs.
func (s Selection) Validate() error {
	if s.Bank.Size() == 0 {
		return fmt.Errorf("unknown PCR bank %q", s.Bank)
	}
	if len(s.PCRs) == 0 || len(s.PCRs) > NumPCRs {
		return fmt.Errorf("bank %s: %d PCRs selected, want 1 to %d", s.Bank, len(s.PCRs), NumPCRs)
	}
	seen := make(map[int]bool, len(s.PCRs))
	for _, p := range s.PCRs {
		if p < 0 || p >= NumPCRs {
			return fmt.Errorf("bank %s: PCR %d out of range", s.Bank, p)
		}
		if seen[p] {
			return fmt.Errorf("bank %s: PCR %d selected twice", s.Bank, p)
		}
		seen[p] = true
	}
	return nil
}

// Challenge is what the server sends to an agent: a fresh nonce and the PCRs
// its policy reads.
type Challenge struct {
	Nonce     []byte      `json:"nonce"`
	Selection []Selection `json:"selection"`
}

// Validate checks the challenge's shape.
func (c *Challenge) Validate() error {
	var errs []error
	if len(c.Nonce) < MinNonce || len(c.Nonce) > MaxNonce {
		errs = append(errs, fmt.Errorf("nonce is %d bytes, want %d to %d", len(c.Nonce), MinNonce, MaxNonce))
	}
	if len(c.Selection) == 0 || len(c.Selection) > len(Banks) {
		errs = append(errs, fmt.Errorf("%d bank selections, want 1 to %d", len(c.Selection), len(Banks)))
	}
	banks := map[Bank]bool{}
	for _, s := range c.Selection {
		if err := s.Validate(); err != nil {
			errs = append(errs, err)
		}
		if banks[s.Bank] {
			errs = append(errs, fmt.Errorf("bank %s selected twice", s.Bank))
		}
		banks[s.Bank] = true
	}
	return errors.Join(errs...)
}

// PCR is one PCR value as reported by the agent. It is trusted only after the
// quote's signed digest covers it.
type PCR struct {
	Bank   Bank   `json:"bank"`
	Index  int    `json:"index"`
	Digest []byte `json:"digest"`
}

// Evidence is an agent's answer to a challenge. Every field is attacker
// controlled until verified.
type Evidence struct {
	// Quote is the TPMS_ATTEST structure exactly as the TPM signed it.
	Quote []byte `json:"quote"`
	// Signature is the TPMT_SIGNATURE over Quote by the node's AK.
	Signature []byte `json:"signature"`
	// PCRs are the values of the quoted PCRs, in any order.
	PCRs []PCR `json:"pcrs"`
	// EventLog is the TCG PC Client (crypto-agile) event log of the static
	// root of trust: PCRs 0-16.
	EventLog []byte `json:"event_log,omitempty"`
	// DRTMLog is the event log of a dynamic (Intel TXT) launch: PCRs 17-22.
	DRTMLog []byte `json:"drtm_log,omitempty"`
	// Received is the document exactly as the agent sent it, when the
	// evidence was decoded from one (UnmarshalJSON): what the server
	// stores. It is not part of the document.
	Received []byte `json:"-"`
}

// UnmarshalJSON decodes an evidence document strictly (see Decode),
// wherever the document stands in a larger one, and keeps its bytes in
// Received.
func (e *Evidence) UnmarshalJSON(b []byte) error {
	d, err := Decode(bytes.Clone(b)) // b is the caller's decoder's
	if err != nil {
		return err
	}
	*e = *d
	return nil
}

// Decode decodes b, which must be exactly one evidence document, strictly:
// no unknown, duplicate or differently cased member, valid UTF-8, nothing
// after the document. Two parsers of such a document cannot read it
// differently, so the evidence stored as received is the evidence that
// was judged. It uses the JSON v2 decoder (github.com/go-json-experiment/json),
// which has those checks and is the cheaper on the attestation path
// (BenchmarkDecode, BENCHMARKS.md). The evidence keeps b as Received: the
// caller hands it over and must not change it.
func Decode(b []byte) (*Evidence, error) {
	type document Evidence // without the UnmarshalJSON method
	var d document
	if err := jsonv2.Unmarshal(b, &d, jsonv2.RejectUnknownMembers(true)); err != nil {
		return nil, err
	}
	e := Evidence(d)
	e.Received = b
	return &e, nil
}

// Validate bounds the evidence's sizes and checks the PCR list's shape: known
// banks, in-range indices, digests of the bank's length, no duplicates.
func (e *Evidence) Validate() error {
	var errs []error
	if len(e.Quote) == 0 || len(e.Quote) > MaxQuote {
		errs = append(errs, fmt.Errorf("quote is %d bytes, want 1 to %d", len(e.Quote), MaxQuote))
	}
	if len(e.Signature) == 0 || len(e.Signature) > MaxSignature {
		errs = append(errs, fmt.Errorf("signature is %d bytes, want 1 to %d", len(e.Signature), MaxSignature))
	}
	if len(e.EventLog) > MaxEventLog {
		errs = append(errs, fmt.Errorf("event log is %d bytes, limit %d", len(e.EventLog), MaxEventLog))
	}
	if len(e.DRTMLog) > MaxEventLog {
		errs = append(errs, fmt.Errorf("DRTM event log is %d bytes, limit %d", len(e.DRTMLog), MaxEventLog))
	}
	if len(e.PCRs) == 0 || len(e.PCRs) > NumPCRs*len(Banks) {
		errs = append(errs, fmt.Errorf("%d PCR values, want 1 to %d", len(e.PCRs), NumPCRs*len(Banks)))
	}
	type key struct {
		bank Bank
		idx  int
	}
	seen := make(map[key]bool, len(e.PCRs))
	for _, p := range e.PCRs {
		switch {
		case p.Bank.Size() == 0:
			errs = append(errs, fmt.Errorf("PCR %d: unknown bank %q", p.Index, p.Bank))
		case p.Index < 0 || p.Index >= NumPCRs:
			errs = append(errs, fmt.Errorf("PCR index %d out of range", p.Index))
		case len(p.Digest) != p.Bank.Size():
			errs = append(errs, fmt.Errorf("PCR %d (%s): digest is %d bytes, want %d", p.Index, p.Bank, len(p.Digest), p.Bank.Size()))
		case seen[key{p.Bank, p.Index}]:
			errs = append(errs, fmt.Errorf("PCR %d (%s) reported twice", p.Index, p.Bank))
		}
		seen[key{p.Bank, p.Index}] = true
	}
	return errors.Join(errs...)
}

// Value returns the reported digest of PCR idx in bank b, or nil.
func (e *Evidence) Value(b Bank, idx int) []byte {
	i := slices.IndexFunc(e.PCRs, func(p PCR) bool { return p.Bank == b && p.Index == idx })
	if i < 0 {
		return nil
	}
	return e.PCRs[i].Digest
}
