package policy

import (
	"bytes"
	"slices"
	"sync"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
)

// maxMemo bounds the exact answers one expectation remembers: the boot
// chains (firmware, shim, kernel, command line) a fleet runs at once.
const maxMemo = 16

// ruleMemo remembers what one expectation's Secure Boot and boot-chain
// rules decided, so that a fleet whose hosts booted the same chain does not
// pay for decoding and checking it on every evaluation. It holds:
//
//   - Exact answers: the proven events (index, type, digest in the
//     expectation's bank, data) and the reasons the rules gave for them.
//     The rules are a pure function of exactly these, so an evaluation over
//     equal events (compared byte for byte, not by a hash of them) gets the
//     same reasons.
//   - pinned's answers, one per approved digest (see pinned).
//
// A memo is made with its expectation (UnmarshalJSON, Golden) and shared by
// its copies; its rules must not be changed once it has been evaluated (a
// new reference version is a new expectation). An expectation built in Go
// without either has no memo and is checked in full every time.
type ruleMemo struct {
	mu      sync.Mutex   // guards answers and pins
	answers []memoAnswer // newest first
	pins    []memoPin    // pinned's answers, one per approved digest asked about
}

type memoPin struct {
	value  []byte
	pinned bool
}

type memoAnswer struct {
	events  []memoEvent
	reasons []verdict.Reason
}

// memoEvent is what the boot-chain rules read of one proven event.
type memoEvent struct {
	index  int
	typ    uint32
	digest []byte
	data   []byte
}

func (e memoEvent) equal(ev *eventlog.Event, d []byte) bool {
	return e.index == ev.Index && e.typ == ev.Type && bytes.Equal(e.digest, d) && bytes.Equal(e.data, ev.Data)
}

// newMemo gives e a memo when it has rules worth remembering.
func (e *Expectation) newMemo() {
	e.memo = nil
	if e.hasBootRules() || len(e.Events) > 0 {
		e.memo = &ruleMemo{}
	}
}

// pinned reports whether the quoted value v of e's PCR decides e's event
// rules and boot_apps and files rules, without reading the host's events:
// v is one of e.Digests, e.Log (the known-good host's events, kept by golden
// import) replays to v from zero, and those rules hold over e.Log. Such a
// value pins every event digest of the PCR: a host that quotes it measured
// the same boot applications and files, in the same order, as the
// known-good host, so these rules add nothing the value does not already
// prove. What no digest covers, such as the event types the host's log
// claims, is the attester's word, not a measurement, and is not read.
// Rules that read event data (secure_boot, cmdline) are never decided this
// way: the Log does not keep the data. This is what lets PCR values alone
// decide a policy whose rules are all of these kinds (NeedsEvents).
func pinned(e Expectation, v []byte) bool {
	if len(e.Events) == 0 && !e.hasBootRules() {
		return false // nothing to decide
	}
	if e.SecureBoot != nil || e.Cmdline != nil || len(e.Log) == 0 || e.Bank.Size() == 0 ||
		e.PCR < 0 || e.PCR >= firstDRTM || !slices.ContainsFunc(e.Digests, func(d Hex) bool { return bytes.Equal(d, v) }) {
		return false // PCRs 17 and up do not start at zero
	}
	m := e.memo
	if m == nil {
		return pinnedByLog(e, v)
	}
	m.mu.Lock()
	i := slices.IndexFunc(m.pins, func(p memoPin) bool { return bytes.Equal(p.value, v) })
	if i >= 0 {
		defer m.mu.Unlock()
		return m.pins[i].pinned
	}
	m.mu.Unlock()
	ok := pinnedByLog(e, v)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !slices.ContainsFunc(m.pins, func(p memoPin) bool { return bytes.Equal(p.value, v) }) {
		m.pins = append(m.pins, memoPin{bytes.Clone(v), ok}) // at most one per digest of e.Digests
	}
	return ok
}

// pinnedByLog is pinned without the memo.
func pinnedByLog(e Expectation, v []byte) bool {
	pcr := make([]byte, e.Bank.Size())
	for _, l := range e.Log {
		if pcr = eventlog.Extend(e.Bank, pcr, l.Digest); pcr == nil {
			return false
		}
	}
	if !bytes.Equal(pcr, v) {
		return false
	}
	for _, rule := range e.Events {
		if !slices.ContainsFunc(e.Log, func(l EventRule) bool { return bytes.Equal(l.Digest, rule.Digest) }) {
			return false
		}
	}
	if !e.hasBootRules() {
		return true
	}
	events := make([]eventlog.Event, len(e.Log))
	for i, l := range e.Log {
		// The rules that may be decided here tell events apart by type
		// (EV_EFI_BOOT_SERVICES_APPLICATION for boot_apps, EV_IPL for
		// files) and digest only.
		typ := uint32(eventlog.EvEFIAction)
		for _, t := range []uint32{eventlog.EvEFIBootServicesApp, eventlog.EvIPL} {
			if l.Type == eventlog.TypeName(t) {
				typ = t
			}
		}
		events[i] = eventlog.Event{Index: i, PCR: e.PCR, Type: typ,
			Digests: []eventlog.Digest{{Bank: e.Bank, Value: l.Digest}}}
	}
	e.memo = nil // a copy: the Log's events are not the host's
	return len(bootRuleReasons(e, events)) == 0
}

// answer returns the remembered reasons for exactly the proven events (in
// bank) of pcr among src, which it reads in place.
func (m *ruleMemo) answer(bank evidence.Bank, src []eventlog.Event, pcr int) ([]verdict.Reason, bool) {
	if m == nil {
		return nil, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
next:
	for _, a := range m.answers {
		k := 0
		for i := range src {
			ev := &src[i]
			if ev.PCR != pcr {
				continue
			}
			d := ev.Digest(bank)
			if d == nil {
				continue
			}
			if k >= len(a.events) || !a.events[k].equal(ev, d) {
				continue next
			}
			k++
		}
		if k == len(a.events) {
			return slices.Clone(a.reasons), true
		}
	}
	return nil, false
}

// remember records the reasons for these proven events, forgetting the
// oldest answer beyond maxMemo.
func (m *ruleMemo) remember(bank evidence.Bank, proven []eventlog.Event, reasons []verdict.Reason) {
	if m == nil {
		return
	}
	a := memoAnswer{events: make([]memoEvent, len(proven)), reasons: slices.Clone(reasons)}
	for i, ev := range proven {
		a.events[i] = memoEvent{index: ev.Index, typ: ev.Type, digest: bytes.Clone(ev.Digest(bank)), data: bytes.Clone(ev.Data)}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.answers = slices.Insert(m.answers, 0, a)
	if len(m.answers) > maxMemo {
		m.answers = m.answers[:maxMemo]
	}
}
