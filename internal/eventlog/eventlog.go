// Package eventlog parses, replays and writes TCG PC Client event logs: the
// crypto-agile TPM 2.0 format of the TCG PC Client Platform Firmware Profile,
// section 10 (a TCG_PCR_EVENT header carrying the "Spec ID Event03" algorithm
// list, then TCG_PCR_EVENT2 entries), and the older SHA-1 format
// (TCG_PCR_EVENT entries only) that some firmware still writes on TPM 2.0
// hosts.
//
// A log is untrusted: the agent sends it and anyone on the node could have
// written it. It means something only after Replay reproduces PCR values that a
// verified quote signed, and then only for the PCRs that matched. Event data
// is never covered by the replay: for most event types the digest is of
// something else (an image, a variable), so Data is an untrusted description.
//
// Everything here is pure: no I/O, no TPM access.
package eventlog

import (
	"bytes"
	"errors"
	"fmt"

	"trustpool/internal/evidence"
	"trustpool/internal/wire"
)

// Limits on what Parse accepts. Real firmware logs hold a few hundred events
// and their largest event data (a db or dbx variable) is tens of KiB; the
// limits leave generous room above that while bounding the work a hostile
// log can cause.
const (
	MaxEvents    = 10000
	MaxEventData = 1 << 20
	// maxAlgorithms bounds the Spec ID event's algorithm list; TPMs have at
	// most a handful of PCR banks.
	maxAlgorithms = 16
	// maxDigestSize is the largest digest a TPM hash algorithm produces (SHA-512).
	maxDigestSize = 64
)

// specIDSignature opens the data of the first event of a crypto-agile log.
var specIDSignature = []byte("Spec ID Event03\x00")

// Digest is one event digest in one PCR bank.
type Digest struct {
	Bank  evidence.Bank `json:"bank"`
	Value []byte        `json:"value"`
}

// Event is one TCG_PCR_EVENT2 (or, in a SHA-1 format log, TCG_PCR_EVENT)
// entry of a log.
type Event struct {
	// Index is the event's position in the log, 0 being the first event after
	// the Spec ID header (the first event of a SHA-1 format log).
	Index int `json:"index"`
	// PCR is below evidence.NumPCRs for every event type but EV_NO_ACTION,
	// which extends nothing and may name any index (Windows logs one on
	// PCR 0xFFFFFFFF). Check the type before using PCR as an index.
	PCR  int    `json:"pcr"`
	Type uint32 `json:"type"`
	// Digests holds the event's digests in the banks the log records, in
	// the order of Log.Banks: one per bank, except for events that carry
	// fewer digests than the Spec ID event lists (Windows boot manager
	// events with sha256 only in a sha1+sha256 log). Digests of algorithms
	// trustpool does not know are skipped.
	Digests []Digest `json:"digests"`
	// Data is the event data: an untrusted description, not covered by the
	// digest for all event types.
	Data []byte `json:"data"`
}

// Digest returns the event's digest in bank b, or nil if it has none.
func (e Event) Digest(b evidence.Bank) []byte {
	for _, d := range e.Digests {
		if d.Bank == b {
			return d.Value
		}
	}
	return nil
}

// Log is a parsed event log.
type Log struct {
	Format Format
	// Banks are the PCR banks the log records digests for, in the order of
	// the Spec ID header, limited to the banks trustpool knows; [sha1] for
	// a SHA-1 format log.
	Banks  []evidence.Bank
	Events []Event
}

// Format is the layout of an event log.
type Format int

const (
	// CryptoAgile is the TPM 2.0 layout: a TCG_PCR_EVENT carrying the
	// "Spec ID Event03" algorithm list, then TCG_PCR_EVENT2 entries with
	// one digest per algorithm (or fewer, see Parse).
	CryptoAgile Format = iota
	// SHA1Format is the TPM 1.2 layout (TCG_PCClientPCREvent, also written
	// by some firmware on TPM 2.0 hosts): TCG_PCR_EVENT entries with one
	// SHA-1 digest each and no Spec ID header. Such a log proves nothing
	// about the sha256 or sha384 banks.
	SHA1Format
)

func (f Format) String() string {
	if f == SHA1Format {
		return "SHA-1 format"
	}
	return "crypto-agile"
}

// specAlg is one entry of the Spec ID event's algorithm list.
type specAlg struct {
	id   uint16
	size int
	// slot is the position of the algorithm's bank in Log.Banks, or -1 for
	// an algorithm trustpool does not know (its digests are skipped).
	slot int
}

// Parse decodes an event log strictly. A log whose first event carries the
// "Spec ID Event03" signature is crypto-agile: every event after that header
// has at most one digest for each algorithm the header lists (fewer are
// allowed: a bank an event carries no digest for cannot be replayed for that
// event's PCR, see Replay). Any other log is read as SHA-1 format. In both,
// every event type but EV_NO_ACTION must name a PCR below evidence.NumPCRs,
// and no bytes may trail the last event. The returned events' Data and digest
// values alias b, which must not be modified while the Log is in use. Parse
// never panics, whatever b holds.
func Parse(b []byte) (*Log, error) {
	if len(b) > evidence.MaxEventLog {
		return nil, fmt.Errorf("parse event log: %d bytes, limit %d", len(b), evidence.MaxEventLog)
	}
	if !isCryptoAgile(b) {
		return parseSHA1(b)
	}
	r := wire.LittleEndian(b)
	algs, banks, err := parseHeader(&r)
	if err != nil {
		return nil, fmt.Errorf("parse event log: %w", err)
	}

	// Two passes: the first validates and counts, so that the second fills
	// exactly sized arrays. All digests share one backing array; event i's
	// are a prefix of digests[i*len(banks) : (i+1)*len(banks)].
	body := r
	n := 0
	for r.Len() > 0 {
		if n == MaxEvents {
			return nil, fmt.Errorf("parse event log: more than %d events", MaxEvents)
		}
		off := r.Offset()
		if _, err := parseEvent(&r, algs, banks, nil); err != nil {
			return nil, fmt.Errorf("parse event log: event %d at offset %d: %w", n, off, err)
		}
		n++
	}
	nb := len(banks)
	events := make([]Event, n)
	digests := make([]Digest, n*nb)
	for i := range events {
		d := digests[i*nb : (i+1)*nb : (i+1)*nb]
		events[i], _ = parseEvent(&body, algs, banks, d)
		events[i].Index = i
	}
	return &Log{Format: CryptoAgile, Banks: banks, Events: events}, nil
}

// isCryptoAgile reports whether b opens with a TCG_PCR_EVENT whose data
// starts with the Spec ID Event03 signature. Only such a log is parsed as
// crypto-agile; a malformed header after that signature is an error, not a
// reason to try the SHA-1 format.
func isCryptoAgile(b []byte) bool {
	const dataOff = 32 // pcrIndex, eventType, digest[20], eventSize
	return len(b) >= dataOff+len(specIDSignature) && bytes.Equal(b[dataOff:dataOff+len(specIDSignature)], specIDSignature)
}

// parseSHA1 decodes a SHA-1 format log: TCG_PCR_EVENT entries (pcrIndex,
// eventType, a 20-byte SHA-1 digest, eventSize, event data).
func parseSHA1(b []byte) (*Log, error) {
	var events []Event
	r := wire.LittleEndian(b)
	if r.Len() == 0 {
		return nil, fmt.Errorf("parse event log: %w", wire.ErrShort)
	}
	// A TCG_PCR_EVENT is at least 32 bytes: the bound keeps a hostile log
	// from making Parse allocate more than the log's own size in events.
	events = make([]Event, 0, min(r.Len()/32+1, MaxEvents))
	digests := make([]Digest, 0, cap(events))
	for r.Len() > 0 {
		n := len(events)
		if n == MaxEvents {
			return nil, fmt.Errorf("parse event log: more than %d events", MaxEvents)
		}
		off := r.Offset()
		pcr, typ := r.U32(), r.U32()
		d := r.Bytes(evidence.SHA1.Size())
		size := r.U32()
		if r.Err() == nil {
			r.Fail(checkEvent(pcr, typ, size, r.Len()))
		}
		if r.Err() != nil {
			return nil, fmt.Errorf("parse event log (SHA-1 format): event %d at offset %d: %w", n, off, r.Err())
		}
		digests = append(digests, Digest{Bank: evidence.SHA1, Value: d})
		events = append(events, Event{Index: n, PCR: int(pcr), Type: typ, Digests: digests[n : n+1 : n+1], Data: r.Bytes(int(size))})
	}
	return &Log{Format: SHA1Format, Banks: []evidence.Bank{evidence.SHA1}, Events: events}, nil
}

// checkEvent checks an event's PCR index and data size (size bytes of data
// announced, left bytes remaining in the log).
func checkEvent(pcr, typ, size uint32, left int) error {
	if pcr >= evidence.NumPCRs && typ != EvNoAction {
		return fmt.Errorf("PCR index %d out of range for %s (only EV_NO_ACTION events, which extend nothing, may name a PCR above %d)", pcr, TypeName(typ), evidence.NumPCRs-1)
	}
	if size > MaxEventData {
		return fmt.Errorf("%d bytes of event data, limit %d", size, MaxEventData)
	}
	if size > uint32(left) {
		return fmt.Errorf("%d bytes of event data, %d left in the log", size, left)
	}
	return nil
}

// parseHeader decodes the TCG_PCR_EVENT that carries the TCG_EfiSpecIDEvent
// and returns its algorithm list and the known banks among them.
func parseHeader(r *wire.Reader) ([]specAlg, []evidence.Bank, error) {
	pcr := r.U32()
	typ := r.U32()
	digest := r.Bytes(20)
	size := r.U32()
	if r.Err() != nil {
		return nil, nil, fmt.Errorf("spec ID event: %w", r.Err())
	}
	if pcr != 0 || typ != EvNoAction {
		return nil, nil, fmt.Errorf("first event is PCR %d type %s, want the spec ID event (PCR 0, EV_NO_ACTION)", pcr, TypeName(typ))
	}
	if !allZero(digest) {
		return nil, nil, errors.New("spec ID event has a non-zero digest")
	}
	if size > uint32(r.Len()) {
		return nil, nil, fmt.Errorf("spec ID event: %d data bytes, %d left", size, r.Len())
	}
	data := wire.LittleEndian(r.Bytes(int(size)))
	sig := data.Bytes(len(specIDSignature))
	data.U32() // platformClass: client or server, irrelevant to replay
	minor, major, _, uintn := data.U8(), data.U8(), data.U8(), data.U8()
	n := data.U32()
	if data.Err() != nil {
		return nil, nil, fmt.Errorf("spec ID event: %w", data.Err())
	}
	if !bytes.Equal(sig, specIDSignature) {
		return nil, nil, fmt.Errorf("spec ID event signature %q, want %q (not a crypto-agile TPM 2.0 log)", sig, specIDSignature)
	}
	if major != 2 || minor != 0 {
		return nil, nil, fmt.Errorf("spec ID event version %d.%d, want 2.0", major, minor)
	}
	if uintn != 1 && uintn != 2 {
		return nil, nil, fmt.Errorf("spec ID event uintnSize %d, want 1 or 2", uintn)
	}
	if n == 0 || n > maxAlgorithms {
		return nil, nil, fmt.Errorf("spec ID event lists %d algorithms, want 1 to %d", n, maxAlgorithms)
	}
	algs := make([]specAlg, 0, n)
	var banks []evidence.Bank
	for range n {
		id, sz := data.U16(), int(data.U16())
		if data.Err() != nil {
			return nil, nil, fmt.Errorf("spec ID event algorithms: %w", data.Err())
		}
		for _, a := range algs {
			if a.id == id {
				return nil, nil, fmt.Errorf("spec ID event lists algorithm 0x%04x twice", id)
			}
		}
		a := specAlg{id: id, size: sz, slot: -1}
		if bank, ok := evidence.BankForAlg(id); ok {
			if sz != bank.Size() {
				return nil, nil, fmt.Errorf("spec ID event: %s digest size %d, want %d", bank, sz, bank.Size())
			}
			a.slot = len(banks)
			banks = append(banks, bank)
		} else if sz == 0 || sz > maxDigestSize {
			return nil, nil, fmt.Errorf("spec ID event: algorithm 0x%04x digest size %d", id, sz)
		}
		algs = append(algs, a)
	}
	vendor := int(data.U8())
	data.Bytes(vendor)
	if data.Err() != nil {
		return nil, nil, fmt.Errorf("spec ID event vendor info: %w", data.Err())
	}
	if data.Len() != 0 {
		return nil, nil, fmt.Errorf("spec ID event has %d trailing bytes", data.Len())
	}
	if len(banks) == 0 {
		return nil, nil, errors.New("spec ID event lists no PCR bank trustpool knows (sha1, sha256, sha384)")
	}
	return algs, banks, nil
}

// parseEvent decodes one TCG_PCR_EVENT2. If digests is not nil, it receives
// the event's known-bank digests in bank order, and the returned event's
// Digests is the filled prefix of it.
func parseEvent(r *wire.Reader, algs []specAlg, banks []evidence.Bank, digests []Digest) (Event, error) {
	pcr := r.U32()
	typ := r.U32()
	count := r.U32()
	if r.Err() != nil {
		return Event{}, r.Err()
	}
	if pcr >= evidence.NumPCRs && typ != EvNoAction {
		return Event{}, checkEvent(pcr, typ, 0, 0)
	}
	if count > uint32(len(algs)) {
		return Event{}, fmt.Errorf("%d digests, the spec ID event lists %d algorithms", count, len(algs))
	}
	var seen uint32 // bit i: algs[i] already read
	var vals [maxAlgorithms][]byte
	for range count {
		id := r.U16()
		if r.Err() != nil {
			return Event{}, r.Err()
		}
		i := algIndex(algs, id)
		if i < 0 {
			return Event{}, fmt.Errorf("digest of algorithm 0x%04x, which the spec ID event does not list", id)
		}
		if seen&(1<<i) != 0 {
			return Event{}, fmt.Errorf("two digests of algorithm 0x%04x", id)
		}
		seen |= 1 << i
		v := r.Bytes(algs[i].size)
		if r.Err() != nil {
			return Event{}, r.Err()
		}
		if s := algs[i].slot; s >= 0 {
			vals[s] = v
		}
	}
	size := r.U32()
	if r.Err() != nil {
		return Event{}, r.Err()
	}
	if err := checkEvent(pcr, typ, size, r.Len()); err != nil {
		return Event{}, err
	}
	e := Event{PCR: int(pcr), Type: typ, Data: r.Bytes(int(size))}
	if digests != nil {
		k := 0
		for s, v := range vals[:len(banks)] {
			if v != nil {
				digests[k] = Digest{Bank: banks[s], Value: v}
				k++
			}
		}
		e.Digests = digests[:k:k]
	}
	return e, nil
}

func algIndex(algs []specAlg, id uint16) int {
	for i, a := range algs {
		if a.id == id {
			return i
		}
	}
	return -1
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
