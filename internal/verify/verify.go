// Package verify checks a node's evidence against its attestation key and
// the server's challenge, and says what the evidence proves: the PCR values a
// TPM quote signed and the event-log entries that replay to them.
//
// Trust flows in one direction. The AK was accepted at enrollment and the
// nonce was made by the server: both are trusted. Everything in an
// evidence.Evidence is attacker controlled until a check below covers it,
// and a value no check covers (a PCR reported outside the signed selection,
// an event of a PCR the quote does not include) never reaches Measurements.
//
// Verification is pure: bytes in, a Result out, no I/O and no TPM access,
// so the server's verification path needs no cgo. Bad evidence is a Result
// with reasons, never an error or a panic.
package verify

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"fmt"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
	"trustpool/internal/wire"
)

// Input is one attestation to verify.
type Input struct {
	// Nonce is the challenge's nonce (trusted: the server made it).
	Nonce []byte
	// Required are the PCRs the policy reads: the signed selection must
	// cover all of them.
	Required []evidence.Selection
	// Evidence is the agent's answer (untrusted).
	Evidence *evidence.Evidence
}

// QuoteInfo is what the TPM signed about itself in the quote. It is set only
// once the quote's signature has verified.
type QuoteInfo struct {
	// Clock is the TPM's time in milliseconds since its last reset.
	Clock uint64 `json:"clock"`
	// ResetCount counts TPM resets (reboots); RestartCount counts
	// resumes from hibernation since the last reset.
	ResetCount   uint32 `json:"reset_count"`
	RestartCount uint32 `json:"restart_count"`
	// Safe is false when the TPM's clock may have gone backwards.
	Safe            bool   `json:"safe"`
	FirmwareVersion uint64 `json:"firmware_version"`
	// Selection is the signed PCR selection, banks in the quote's order.
	Selection []evidence.Selection `json:"selection"`
}

// Measurements are what verification proved: only PCRs inside the signed
// selection whose reported values hash to the signed digest, and only events
// from PCRs whose replay equals the quoted value. Each event keeps only its
// digests in the banks that proved it; its Data is still an untrusted
// description. Events alias the evidence's log bytes.
type Measurements struct {
	PCRs       map[evidence.Bank]map[int][]byte `json:"pcrs"`
	Events     []eventlog.Event                 `json:"events"`      // SRTM log events that replayed
	DRTMEvents []eventlog.Event                 `json:"drtm_events"` // DRTM log events that replayed
	// Unproven says, for each quoted PCR and bank the log extends but cannot
	// account for, why (code verdict.CodeUnproven): a SHA-1 format log says nothing
	// about sha256, and an event with no digest in a bank leaves its PCR
	// unreplayable in that bank. The PCR's quoted value is still proven;
	// its events are not, in that bank. These do not fail verification: a
	// policy that needs those events fails for want of them, and these
	// reasons say why they are missing.
	Unproven []verdict.Reason `json:"unproven,omitempty"`
}

// Result is the outcome of verifying one piece of evidence.
type Result struct {
	// Reasons lists the failed checks; empty means the evidence verified.
	Reasons      []verdict.Reason `json:"reasons,omitempty"`
	Quote        QuoteInfo        `json:"quote"`
	Measurements Measurements     `json:"measurements"`
}

// OK reports whether the evidence verified.
func (r Result) OK() bool { return len(r.Reasons) == 0 }

// bankIndex is a bank's position in evidence.Banks, used to index fixed-size
// arrays instead of maps on the hot path.
func bankIndex(b evidence.Bank) int {
	switch b {
	case evidence.SHA1:
		return 0
	case evidence.SHA256:
		return 1
	case evidence.SHA384:
		return 2
	}
	return -1
}

// Verify checks in.Evidence against the AK and the challenge, in this order,
// each failure with its own reason code:
//
//  1. shape and sizes (evidence.Validate), TPMS_ATTEST decoding: CodeMalformed;
//  2. magic TPM_GENERATED_VALUE and type TPM_ST_ATTEST_QUOTE: CodeQuoteType;
//  3. the AK's signature over the attest bytes: CodeSignature;
//  4. qualifiedSigner names this AK as a primary of the owner hierarchy: CodeSigner;
//  5. extraData is the nonce: CodeNonce;
//  6. the signed selection covers every required PCR: CodeSelection;
//  7. the reported values of the selected PCRs hash to pcrDigest: CodePCRDigest;
//  8. the event logs parse (CodeEventLog) and replay to the quoted values (CodeReplay).
//
// A failure in steps 1-5 or 7 ends verification, since later checks mean
// nothing without them; selection and log failures are all reported.
func (ak *AK) Verify(in Input) Result {
	var res Result
	fail := func(code, format string, args ...any) Result {
		res.Reasons = append(res.Reasons, verdict.Reason{Code: code, Message: fmt.Sprintf(format, args...)})
		return res
	}
	ev := in.Evidence
	if ev == nil {
		return fail(verdict.CodeMalformed, "no evidence")
	}
	if err := ev.Validate(); err != nil {
		return fail(verdict.CodeMalformed, "evidence: %v", err)
	}

	var a attest
	r := wire.BigEndian(ev.Quote)
	if err := decodeAttestHeader(&r, &a); err != nil {
		return fail(verdict.CodeMalformed, "quote: %v", err)
	}
	if a.magic != generated {
		return fail(verdict.CodeQuoteType, "quote magic is 0x%08x, not TPM_GENERATED_VALUE: the TPM did not make it", a.magic)
	}
	if a.typ != stAttestQuot {
		return fail(verdict.CodeQuoteType, "attestation type 0x%04x is not a quote (TPM_ST_ATTEST_QUOTE)", a.typ)
	}
	if err := decodeQuoteInfo(&r, &a); err != nil {
		return fail(verdict.CodeMalformed, "quote: %v", err)
	}
	sig, err := decodeSignature(ev.Signature)
	if err != nil {
		return fail(verdict.CodeMalformed, "signature: %v", err)
	}
	if err := ak.checkSignature(ev.Quote, sig); err != nil {
		return fail(verdict.CodeSignature, "%v", err)
	}

	// The quote is now known to come from the AK's TPM.
	res.Quote = QuoteInfo{
		Clock: a.clock, ResetCount: a.resetCount, RestartCount: a.restartCount, Safe: a.safe,
		FirmwareVersion: a.firmwareVersion, Selection: a.selection,
	}
	if !bytes.Equal(a.qualifiedSigner, ak.qualifiedName) {
		return fail(verdict.CodeSigner, "quote names signer %x, this AK's qualified name is %x", a.qualifiedSigner, ak.qualifiedName)
	}
	if len(in.Nonce) < evidence.MinNonce {
		return fail(verdict.CodeNonce, "challenge nonce is %d bytes, want at least %d", len(in.Nonce), evidence.MinNonce)
	}
	if subtle.ConstantTimeCompare(a.extraData, in.Nonce) != 1 {
		return fail(verdict.CodeNonce, "quote is not for this challenge's nonce")
	}

	// Masks of the signed selection by bank, for O(1) membership tests.
	var quoted [3]uint32
	for i, s := range a.selection {
		quoted[bankIndex(s.Bank)] = a.masks[i]
	}
	for _, req := range in.Required {
		bi := bankIndex(req.Bank)
		for _, p := range req.PCRs {
			if bi < 0 || p < 0 || p >= evidence.NumPCRs || quoted[bi]&(1<<p) == 0 {
				res.Reasons = append(res.Reasons, verdict.PCRReason(verdict.CodeSelection, p, string(req.Bank),
					"PCR %d (%s) is required but not in the quote's signed selection", p, req.Bank))
			}
		}
	}

	// Reported values by bank and PCR. Values outside the signed selection
	// are never read.
	var reported [3][evidence.NumPCRs][]byte
	for _, p := range ev.PCRs {
		reported[bankIndex(p.Bank)][p.Index] = p.Digest
	}
	h := ak.hash.New()
	for _, s := range a.selection {
		bi := bankIndex(s.Bank)
		for _, p := range s.PCRs {
			v := reported[bi][p]
			if v == nil {
				return fail(verdict.CodePCRDigest, "PCR %d (%s) is quoted but its value was not reported", p, s.Bank)
			}
			h.Write(v)
		}
	}
	if got := h.Sum(nil); !bytes.Equal(got, a.pcrDigest) {
		return fail(verdict.CodePCRDigest, "reported PCR values hash to %x, the quote signed %x", got, a.pcrDigest)
	}

	// The selected values are proven. Copy them out of the evidence into
	// one buffer.
	res.Measurements.PCRs = make(map[evidence.Bank]map[int][]byte, len(a.selection))
	size := 0
	for _, s := range a.selection {
		size += len(s.PCRs) * s.Bank.Size()
	}
	buf := make([]byte, 0, size)
	for _, s := range a.selection {
		m := make(map[int][]byte, len(s.PCRs))
		for _, p := range s.PCRs {
			start := len(buf)
			buf = append(buf, reported[bankIndex(s.Bank)][p]...)
			m[p] = buf[start:len(buf):len(buf)]
		}
		res.Measurements.PCRs[s.Bank] = m
	}

	if len(ev.EventLog) > 0 {
		res.Measurements.Events = checkLog(&res, &a, &reported, ev.EventLog, false)
	}
	if len(ev.DRTMLog) > 0 {
		res.Measurements.DRTMEvents = checkLog(&res, &a, &reported, ev.DRTMLog, true)
	}
	return res
}

// checkSignature verifies the TPMT_SIGNATURE over msg (the attest bytes)
// with the AK. The scheme and hash must be the AK's own: a restricted key
// signs only with its scheme, so anything else was not made by this AK.
func (ak *AK) checkSignature(msg []byte, sig signature) error {
	if sig.alg != ak.scheme || sig.hash != ak.hashAlg {
		return fmt.Errorf("signature scheme 0x%04x with hash 0x%04x, the AK signs with 0x%04x and 0x%04x", sig.alg, sig.hash, ak.scheme, ak.hashAlg)
	}
	digest := hashOf(ak.hash, msg)
	switch key := ak.key.(type) {
	case *rsa.PublicKey:
		var err error
		if sig.alg == algRSASSA {
			err = rsa.VerifyPKCS1v15(key, ak.hash, digest, sig.sig)
		} else {
			err = rsa.VerifyPSS(key, ak.hash, digest, sig.sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		}
		if err != nil {
			return fmt.Errorf("quote signature does not verify under the AK: %w", err)
		}
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(key, digest, asn1Signature(sig.r, sig.s)) {
			return fmt.Errorf("quote signature does not verify under the AK")
		}
	default:
		return fmt.Errorf("AK has no usable public key")
	}
	return nil
}

// hashOf hashes b with h (sha256 or sha384: the hashes ParseAK admits).
func hashOf(h crypto.Hash, b []byte) []byte {
	if h == crypto.SHA384 {
		s := sha512.Sum384(b)
		return s[:]
	}
	s := sha256.Sum256(b)
	return s[:]
}

// asn1Signature encodes the ECDSA scalars r and s as the DER
// SEQUENCE { INTEGER r, INTEGER s } that ecdsa.VerifyASN1 takes.
func asn1Signature(r, s []byte) []byte {
	out := make([]byte, 0, 2+2*(3+maxECCBytes))
	out = append(out, 0x30, 0)
	out = appendASN1Int(out, r)
	out = appendASN1Int(out, s)
	out[1] = byte(len(out) - 2)
	return out
}

func appendASN1Int(out, v []byte) []byte {
	for len(v) > 1 && v[0] == 0 {
		v = v[1:]
	}
	if len(v) == 0 {
		v = []byte{0}
	}
	pad := v[0]&0x80 != 0
	n := len(v)
	if pad {
		n++
	}
	out = append(out, 0x02, byte(n))
	if pad {
		out = append(out, 0)
	}
	return append(out, v...)
}

// checkLog parses an event log, replays it in every quoted bank it records
// and compares the PCRs it extended with the quoted values, adding a reason
// for each problem. It returns the events of the PCRs that replayed.
//
// An SRTM log is replayed as from TPM start (PCRs 17-22 all-ones). For PCRs
// 0-7 it must also explain a quoted value even without events: PC Client
// firmware measures at least a separator into each of them, so a quoted,
// changed PCR in 0-7 with no events means the log was cut short.
//
// A DRTM log is replayed as from a dynamic launch (PCRs 17-22 from zero)
// and may only extend PCRs 17-22.
func checkLog(res *Result, a *attest, reported *[3][evidence.NumPCRs][]byte, raw []byte, drtm bool) []eventlog.Event {
	what := "event log"
	if drtm {
		what = "DRTM event log"
	}
	l, err := eventlog.Parse(raw)
	if err != nil {
		res.Reasons = append(res.Reasons, verdict.Reason{Code: verdict.CodeEventLog, Message: fmt.Sprintf("%s: %v", what, err)})
		return nil
	}
	if drtm {
		for _, e := range l.Events {
			if e.Type != eventlog.EvNoAction && (e.PCR < 17 || e.PCR > 22) {
				res.Reasons = append(res.Reasons, verdict.PCRReason(verdict.CodeEventLog, e.PCR, "",
					"%s: event %d extends PCR %d, outside 17-22", what, e.Index, e.PCR))
				return nil
			}
		}
	}

	eventOf := "" // how the gap reason names an event of this log
	if drtm {
		eventOf = "DRTM log "
	}
	// The PCRs the log extends at all, in any bank.
	var touched [evidence.NumPCRs]bool
	for _, e := range l.Events {
		if e.Type != eventlog.EvNoAction && e.PCR >= 0 && e.PCR < evidence.NumPCRs {
			touched[e.PCR] = true
		}
	}
	unproven := func(p int, b evidence.Bank, format string, args ...any) {
		res.Measurements.Unproven = append(res.Measurements.Unproven, verdict.PCRReason(verdict.CodeUnproven, p, string(b),
			"PCR %d (%s) cannot be proven: %s", p, b, fmt.Sprintf(format, args...)))
	}

	// proven[p] has bit i set when PCR p replayed in l.Banks[i];
	// refuted[p] when it failed to in some bank.
	var proven [evidence.NumPCRs]uint8
	var refuted [evidence.NumPCRs]bool
	for _, s := range a.selection {
		slot := -1
		for i, b := range l.Banks {
			if b == s.Bank {
				slot = i
			}
		}
		if slot < 0 {
			// The log has no digests in this quoted bank: it proves none
			// of its events there, and says so for each PCR it extends.
			for _, p := range s.PCRs {
				if !touched[p] {
					continue
				}
				if l.Format == eventlog.SHA1Format {
					unproven(p, s.Bank, "the %s is in SHA-1 format, which carries sha1 digests only", what)
				} else {
					unproven(p, s.Bank, "the %s records no %s digests", what, s.Bank)
				}
			}
			continue
		}
		r, err := l.ReplayBank(s.Bank, drtm)
		if err != nil {
			res.Reasons = append(res.Reasons, verdict.Reason{Code: verdict.CodeEventLog, Message: fmt.Sprintf("%s: %v", what, err)})
			return nil
		}
		bi := bankIndex(s.Bank)
		for _, p := range s.PCRs {
			if g := r.Gap[p]; g >= 0 {
				unproven(p, s.Bank, "%sevent %d carries no %s digest", eventOf, g, s.Bank)
				continue
			}
			if !r.Extended[p] && (drtm || p > 7) {
				continue // the log says nothing about this PCR
			}
			q := reported[bi][p]
			if bytes.Equal(r.Values[p], q) {
				if r.Extended[p] {
					proven[p] |= 1 << slot
				}
				continue
			}
			refuted[p] = true
			res.Reasons = append(res.Reasons, verdict.PCRReason(verdict.CodeReplay, p, string(s.Bank),
				"%s replays PCR %d (%s) to %x, the quote has %x", what, p, s.Bank, r.Values[p], q))
		}
	}

	// slotOf[bankIndex(b)] is b's position in l.Banks.
	slotOf := [3]int{-1, -1, -1}
	for i, b := range l.Banks {
		if bi := bankIndex(b); bi >= 0 {
			slotOf[bi] = i
		}
	}
	has := func(m uint8, d eventlog.Digest) bool {
		bi := bankIndex(d.Bank)
		return bi >= 0 && slotOf[bi] >= 0 && m&(1<<slotOf[bi]) != 0
	}

	// Filter l.Events in place: the log was parsed here and is not shared.
	all := uint8(1)<<len(l.Banks) - 1
	out := l.Events[:0]
	for _, e := range l.Events {
		// EV_NO_ACTION events may name any PCR index: look at the type
		// before using the index.
		if e.Type == eventlog.EvNoAction || e.PCR < 0 || e.PCR >= evidence.NumPCRs {
			continue
		}
		m := proven[e.PCR]
		if m == 0 || refuted[e.PCR] {
			continue
		}
		// Keep only the digests of banks that proved this PCR; a digest in
		// an unquoted bank is as untrusted as the data.
		if m == all && len(e.Digests) == len(l.Banks) {
			out = append(out, e)
			continue
		}
		n, first := 0, -1
		for i, d := range e.Digests {
			if has(m, d) {
				if first < 0 {
					first = i
				}
				n++
			}
		}
		switch {
		case n == 0:
			continue
		case n == 1: // one bank: a sub-slice, no allocation
			e.Digests = e.Digests[first : first+1 : first+1]
		default:
			ds := make([]eventlog.Digest, 0, n)
			for _, d := range e.Digests {
				if has(m, d) {
					ds = append(ds, d)
				}
			}
			e.Digests = ds
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
