package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// The audit log is a hash chain: entry n carries
//
//	Hash(n) = SHA-256(Hash(n-1) || encode(entry n))
//
// with Hash(0) = 32 zero bytes, and encode the length-prefixed binary form
// below (a domain tag, Seq, Time in microseconds, then Actor, Action,
// Subject, Detail, each preceded by its 32-bit length). Changing, removing
// or reordering an entry breaks every later hash. Whoever can write the
// database can recompute the whole chain, so the chain proves integrity
// only up to a head (AuditHead) that was recorded somewhere else; entries
// cut from the end are likewise visible only against such a head.

// chainTag separates audit hashes from any other SHA-256 use.
const chainTag = "trustpool audit v1\x00"

// genesis is Hash(0).
func genesis() []byte { return make([]byte, sha256.Size) }

// chainHash computes e's hash from its predecessor's. Only Seq, Time,
// Actor, Action, Subject and Detail are covered; e.Hash is not.
func chainHash(prev []byte, e Entry) []byte {
	h := sha256.New()
	h.Write(prev)
	b := make([]byte, 0, len(chainTag)+16+16+len(e.Actor)+len(e.Action)+len(e.Subject)+len(e.Detail))
	b = append(b, chainTag...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Seq))
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixMicro()))
	for _, f := range [][]byte{[]byte(e.Actor), []byte(e.Action), []byte(e.Subject), e.Detail} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	h.Write(b)
	return h.Sum(nil)
}

// ChainFault says how a chain is broken.
type ChainFault string

// Chain faults.
const (
	// FaultChanged: the entry's hash does not match its content and its
	// predecessor's hash.
	FaultChanged ChainFault = "changed"
	// FaultRemoved: the entry with this sequence number is missing.
	FaultRemoved ChainFault = "removed"
	// FaultReordered: the entry is out of sequence order (or repeated).
	FaultReordered ChainFault = "reordered"
)

// ChainError locates the first break in an audit chain.
type ChainError struct {
	Index int   // position in the slice given to VerifyChain
	Seq   int64 // sequence number of the broken (or missing) entry
	Fault ChainFault
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("audit chain broken at entry %d (index %d): %s", e.Seq, e.Index, e.Fault)
}

// VerifyChain checks a chain from its first entry (Seq 1) on, as ListAudit
// returns it, and reports the first changed, removed or reordered entry as
// a *ChainError. See VerifyChainAfter to check a later page.
func VerifyChain(entries []Entry) error {
	return VerifyChainAfter(Entry{Seq: 0, Hash: genesis()}, entries)
}

// VerifyChainAfter checks entries that follow anchor, an entry already
// verified (for example the last of the previous page).
func VerifyChainAfter(anchor Entry, entries []Entry) error {
	prev, next := anchor.Hash, anchor.Seq+1
	for i, e := range entries {
		switch {
		case e.Seq < next:
			return &ChainError{Index: i, Seq: e.Seq, Fault: FaultReordered}
		case e.Seq > next:
			for _, later := range entries[i+1:] {
				if later.Seq == next {
					return &ChainError{Index: i, Seq: e.Seq, Fault: FaultReordered}
				}
			}
			return &ChainError{Index: i, Seq: next, Fault: FaultRemoved}
		}
		if !bytes.Equal(chainHash(prev, e), e.Hash) {
			return &ChainError{Index: i, Seq: e.Seq, Fault: FaultChanged}
		}
		prev, next = e.Hash, next+1
	}
	return nil
}

// Entry is one audited action. Append assigns Seq and Hash.
type Entry struct {
	Seq     int64
	Time    time.Time
	Actor   string // who: a token's name, "system", a host for agent actions
	Action  string // what, dotted: "reference.put", "host.approve"
	Subject string // on what: "vmm-kvm@v3", a host name
	Detail  []byte // JSON, or empty
	Hash    []byte
}
