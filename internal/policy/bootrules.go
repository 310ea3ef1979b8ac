package policy

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"trustpool/internal/eventlog"
	"trustpool/internal/evidence"
	"trustpool/internal/uefi"
	"trustpool/internal/verdict"
)

// Limits on boot-chain rules: a real dbx has a few hundred entries; a
// pattern is one command line.
const (
	maxRuleEntries = 10000
	maxPatterns    = 64
	maxPatternLen  = 1024
	maxListed      = 3 // offending entries a reason names before "and N more"
)

// Known is a digest with an optional note for people. In JSON it is the hex
// string alone, or {"digest": "…", "note": "…"}.
type Known struct {
	Digest Hex    `json:"digest"`
	Note   string `json:"note,omitempty"`
}

// MarshalJSON writes k as a hex string when it has no note.
func (k Known) MarshalJSON() ([]byte, error) {
	if k.Note == "" {
		return json.Marshal(k.Digest)
	}
	type plain Known
	return json.Marshal(plain(k))
}

// UnmarshalJSON reads a hex string or a {"digest", "note"} object.
func (k *Known) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		*k = Known{}
		return k.Digest.UnmarshalJSON(b)
	}
	type plain Known
	var p plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("known digest: %w", err)
	}
	*k = Known(p)
	return nil
}

func (k Known) String() string {
	if k.Note == "" {
		return fmt.Sprintf("%x", []byte(k.Digest))
	}
	return fmt.Sprintf("%x (%s)", []byte(k.Digest), k.Note)
}

// Pattern is a Go regular expression (RE2 syntax: matching is linear in the
// text) that must match a whole text: it is anchored at both ends. It is
// compiled when it is read, so a bad pattern fails loading a reference.
type Pattern struct {
	src string
	re  *regexp.Regexp
}

// NewPattern compiles src as an anchored pattern.
func NewPattern(src string) (Pattern, error) {
	if len(src) > maxPatternLen {
		return Pattern{}, fmt.Errorf("pattern of %d bytes: the limit is %d", len(src), maxPatternLen)
	}
	if _, err := regexp.Compile(src); err != nil {
		return Pattern{}, fmt.Errorf("pattern %q: %w", src, err)
	}
	re, err := regexp.Compile(`^(?:` + src + `)$`)
	if err != nil {
		return Pattern{}, fmt.Errorf("pattern %q: %w", src, err)
	}
	return Pattern{src: src, re: re}, nil
}

// MustPattern is NewPattern for patterns known to be good.
func MustPattern(src string) Pattern {
	p, err := NewPattern(src)
	if err != nil {
		panic(err)
	}
	return p
}

// Match reports whether p matches all of s. A Pattern that was never
// compiled matches nothing.
func (p Pattern) Match(s string) bool { return p.re != nil && p.re.MatchString(s) }

func (p Pattern) String() string { return p.src }

// MarshalJSON writes the pattern's source.
func (p Pattern) MarshalJSON() ([]byte, error) { return json.Marshal(p.src) }

// UnmarshalJSON reads and compiles a pattern.
func (p *Pattern) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("pattern must be a string: %w", err)
	}
	q, err := NewPattern(s)
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// SecureBootRule is a PCR 7 rule over the Secure Boot variables the firmware
// measured (EV_EFI_VARIABLE_DRIVER_CONFIG). Enabled requires SecureBoot = 1;
// each database rule, when present, requires that variable to be measured
// and its contents to satisfy the rule.
type SecureBootRule struct {
	Enabled bool             `json:"enabled,omitempty"`
	PK      *SignatureDBRule `json:"pk,omitempty"`
	KEK     *SignatureDBRule `json:"kek,omitempty"`
	DB      *SignatureDBRule `json:"db,omitempty"`
	DBX     *SignatureDBRule `json:"dbx,omitempty"`
}

// SignatureDBRule constrains one of PK, KEK, db, dbx. Entries are named by
// their SHA-256 digest: an X.509 certificate's is the SHA-256 of its DER
// bytes (its usual fingerprint), an EFI_CERT_SHA256 entry's is the hash it
// holds, any other entry's is the SHA-256 of its signature data.
type SignatureDBRule struct {
	// Allow: the variable holds at least one entry and every entry is one of these.
	Allow []Known `json:"allow,omitempty"`
	// Require: every one of these is an entry (dbx: revocations that must be present).
	Require []Known `json:"require,omitempty"`
	// Digests: the variable's event digest, in the expectation's bank, is one of these.
	Digests []Known `json:"digests,omitempty"`
}

// DigestSetRule constrains the digests of a PCR's events of one kind: the
// boot applications of PCR 4 (EV_EFI_BOOT_SERVICES_APPLICATION, the
// Authenticode digests of shim, the boot loader, the kernel) or the files
// GRUB loaded into PCR 9 (EV_IPL: kernel, initrd, grub.cfg). At least one such
// event must have been measured. Digests are in the expectation's bank.
type DigestSetRule struct {
	// Allow: every event's digest is one of these (a set).
	Allow []Known `json:"allow,omitempty"`
	// Require: every one of these is some event's digest.
	Require []Known `json:"require,omitempty"`
	// Sequence: the events' digests are exactly these, in this order.
	Sequence []Known `json:"sequence,omitempty"`
}

// CmdlineRule is a PCR 8 rule over the texts GRUB measured (EV_IPL,
// "kernel_cmdline: …" and "grub_cmd: …"). Each text is checked only once
// its digest is proven to cover it.
type CmdlineRule struct {
	// Kernel: at least one kernel command line was measured and each matches one of these.
	Kernel []Pattern `json:"kernel,omitempty"`
	// Commands: each GRUB command matches one of these.
	Commands []Pattern `json:"commands,omitempty"`
}

// hasBootRules reports whether e holds any Secure Boot or boot-chain rule.
func (e *Expectation) hasBootRules() bool {
	return e.SecureBoot != nil || e.BootApps != nil || e.Cmdline != nil || e.Files != nil
}

// validateBootRules reports every problem with e's boot-chain rules. Each
// kind reads one PCR's events, in the layout the firmware or GRUB writes
// there, so each is accepted on that PCR only.
func validateBootRules(where string, e *Expectation) []error {
	var errs []error
	onPCR := func(kind string, pcr int) {
		if e.PCR != pcr {
			errs = append(errs, fmt.Errorf("%s: %s rules apply to PCR %d only", where, kind, pcr))
		}
	}
	sizes := func(what string, ks []Known, size int) {
		if len(ks) > maxRuleEntries {
			errs = append(errs, fmt.Errorf("%s: %s: %d entries, the limit is %d", where, what, len(ks), maxRuleEntries))
		}
		for _, k := range ks {
			if len(k.Digest) != size {
				errs = append(errs, fmt.Errorf("%s: %s: digest %x is %d bytes, want %d", where, what, []byte(k.Digest), len(k.Digest), size))
			}
		}
	}
	if sb := e.SecureBoot; sb != nil {
		onPCR("secure_boot", 7)
		if !sb.Enabled && sb.PK == nil && sb.KEK == nil && sb.DB == nil && sb.DBX == nil {
			errs = append(errs, fmt.Errorf("%s: secure_boot rule checks nothing", where))
		}
		for _, v := range secureBootVars(sb) {
			if v.rule == nil {
				continue
			}
			if len(v.rule.Allow)+len(v.rule.Require)+len(v.rule.Digests) == 0 {
				errs = append(errs, fmt.Errorf("%s: secure_boot %s rule checks nothing", where, v.name))
			}
			sizes("secure_boot "+v.name+" allow", v.rule.Allow, sha256.Size)
			sizes("secure_boot "+v.name+" require", v.rule.Require, sha256.Size)
			sizes("secure_boot "+v.name+" digests", v.rule.Digests, e.Bank.Size())
		}
	}
	for _, r := range []struct {
		kind string
		pcr  int
		rule *DigestSetRule
	}{{"boot_apps", 4, e.BootApps}, {"files", 9, e.Files}} {
		if r.rule == nil {
			continue
		}
		onPCR(r.kind, r.pcr)
		if len(r.rule.Allow)+len(r.rule.Require)+len(r.rule.Sequence) == 0 {
			errs = append(errs, fmt.Errorf("%s: %s rule checks nothing", where, r.kind))
		}
		sizes(r.kind+" allow", r.rule.Allow, e.Bank.Size())
		sizes(r.kind+" require", r.rule.Require, e.Bank.Size())
		sizes(r.kind+" sequence", r.rule.Sequence, e.Bank.Size())
	}
	if c := e.Cmdline; c != nil {
		onPCR("cmdline", 8)
		if len(c.Kernel)+len(c.Commands) == 0 {
			errs = append(errs, fmt.Errorf("%s: cmdline rule checks nothing", where))
		}
		for what, ps := range map[string][]Pattern{"kernel": c.Kernel, "commands": c.Commands} {
			if len(ps) > maxPatterns {
				errs = append(errs, fmt.Errorf("%s: cmdline %s: %d patterns, the limit is %d", where, what, len(ps), maxPatterns))
			}
			for _, p := range ps {
				if p.re == nil {
					errs = append(errs, fmt.Errorf("%s: cmdline %s: pattern %q was not compiled (use NewPattern)", where, what, p.src))
				}
			}
		}
	}
	return errs
}

type namedVar struct {
	name   string
	vendor uefi.GUID
	rule   *SignatureDBRule
}

func secureBootVars(sb *SecureBootRule) []namedVar {
	return []namedVar{
		{"PK", uefi.GlobalVariable, sb.PK},
		{"KEK", uefi.GlobalVariable, sb.KEK},
		{"db", uefi.ImageSecurityDatabase, sb.DB},
		{"dbx", uefi.ImageSecurityDatabase, sb.DBX},
	}
}

// bootRuleReasons checks e's boot-chain rules against the events that
// replayed into e.PCR, using only their digests in e.Bank: the bank the
// quote proved this PCR in. An event without a digest there proves nothing.
// It records its answer in e's memo (see ruleMemo.answer).
func bootRuleReasons(e Expectation, events []eventlog.Event) []verdict.Reason {
	if !e.hasBootRules() {
		return nil
	}
	proven := events // the common case: every event is proven in e.Bank
	for i, ev := range events {
		if ev.Digest(e.Bank) == nil {
			proven = slices.Clip(events[:i:i])
			for _, ev := range events[i:] {
				if ev.Digest(e.Bank) != nil {
					proven = append(proven, ev)
				}
			}
			break
		}
	}
	c := checker{e: e, events: proven}
	defer func() { e.memo.remember(e.Bank, proven, c.reasons) }()
	if e.SecureBoot != nil {
		c.secureBoot(e.SecureBoot)
	}
	if e.BootApps != nil {
		c.digestSet(e.BootApps, eventlog.EvEFIBootServicesApp, "boot application")
	}
	if e.Cmdline != nil {
		c.cmdline(e.Cmdline)
	}
	if e.Files != nil {
		c.digestSet(e.Files, eventlog.EvIPL, "file")
	}
	return c.reasons
}

type checker struct {
	e       Expectation
	events  []eventlog.Event
	reasons []verdict.Reason
}

func (c *checker) fail(code, format string, args ...any) {
	c.reasons = append(c.reasons, verdict.PCRReason(code, c.e.PCR, string(c.e.Bank),
		"PCR %d: "+format, append([]any{c.e.PCR}, args...)...))
}

// covers reports whether some candidate hashes, in the expectation's bank,
// to the event's digest: the event data is then proven, not just claimed.
func (c *checker) covers(ev eventlog.Event, candidates ...[]byte) bool {
	d := ev.Digest(c.e.Bank)
	for _, b := range candidates {
		if h := hashIn(c.e.Bank, b); h != nil && bytes.Equal(h, d) {
			return true
		}
	}
	return false
}

func hashIn(b evidence.Bank, data []byte) []byte {
	switch b {
	case evidence.SHA1:
		h := sha1.Sum(data)
		return h[:]
	case evidence.SHA256:
		h := sha256.Sum256(data)
		return h[:]
	case evidence.SHA384:
		h := sha512.Sum384(data)
		return h[:]
	}
	return nil
}

type measuredVar struct {
	ev eventlog.Event
	v  uefi.Variable
}

// variables decodes the PCR's EV_EFI_VARIABLE_DRIVER_CONFIG events. The
// digest of such an event covers its whole UEFI_VARIABLE_DATA, name and GUID
// included, so a decoded variable is what the firmware measured. An event
// whose data it does not cover, or that does not decode, is a failure: the
// variable it stands for cannot be known, so no rule may pass over it.
func (c *checker) variables() ([]measuredVar, bool) {
	var vars []measuredVar
	ok := true
	for _, ev := range c.events {
		if ev.Type != eventlog.EvEFIVariableDriverConf {
			continue
		}
		if !c.covers(ev, ev.Data) {
			c.fail(verdict.CodeBootRule, "event #%d EV_EFI_VARIABLE_DRIVER_CONFIG: its data does not hash to its digest, so the variable it measured is unknown", ev.Index)
			ok = false
			continue
		}
		v, err := uefi.ParseVariable(ev.Data)
		if err != nil {
			c.fail(verdict.CodeBootRule, "event #%d EV_EFI_VARIABLE_DRIVER_CONFIG: %v", ev.Index, err)
			ok = false
			continue
		}
		vars = append(vars, measuredVar{ev, v})
	}
	return vars, ok
}

func findVars(vars []measuredVar, name string, vendor uefi.GUID) []measuredVar {
	var out []measuredVar
	for _, v := range vars {
		if v.v.Name == name && v.v.Vendor == vendor {
			out = append(out, v)
		}
	}
	return out
}

func (c *checker) secureBoot(r *SecureBootRule) {
	vars, ok := c.variables()
	if !ok {
		return
	}
	if r.Enabled {
		sb := findVars(vars, "SecureBoot", uefi.GlobalVariable)
		if len(sb) == 0 {
			c.fail(verdict.CodeEventMissing, "no SecureBoot variable was measured (EV_EFI_VARIABLE_DRIVER_CONFIG): Secure Boot is not proven enabled")
		}
		for _, v := range sb {
			if !bytes.Equal(v.v.Data, []byte{1}) {
				c.fail(verdict.CodeBootRule, "SecureBoot is %s (event #%d): Secure Boot is disabled, the reference requires it enabled", secureBootValue(v.v.Data), v.ev.Index)
			}
		}
	}
	for _, nv := range secureBootVars(r) {
		if nv.rule == nil {
			continue
		}
		found := findVars(vars, nv.name, nv.vendor)
		if len(found) == 0 {
			c.fail(verdict.CodeEventMissing, "no %s variable was measured (EV_EFI_VARIABLE_DRIVER_CONFIG): its contents are unproven", nv.name)
		}
		for _, v := range found {
			c.signatureDB(nv.name, nv.rule, v)
		}
	}
}

func secureBootValue(b []byte) string {
	if len(b) == 0 {
		return "empty"
	}
	return fmt.Sprintf("%x", b)
}

// entry is one signature-database entry as rules name it.
type entry struct {
	id   [sha256.Size]byte // see SignatureDBRule
	data []byte            // the certificate or hash
	typ  uefi.GUID
}

// desc describes e for people, only when a reason needs it (parsing every
// certificate of dbx on each evaluation would cost more than the rule).
func (e entry) desc() string {
	switch e.typ {
	case uefi.CertX509:
		return certDesc(e.data)
	case uefi.CertSHA256:
		return "image hash"
	}
	return "entry of type " + e.typ.String()
}

func entriesOf(lists []uefi.SignatureList) []entry {
	n := 0
	for _, l := range lists {
		n += len(l.Signatures)
	}
	out := make([]entry, 0, n)
	for _, l := range lists {
		for _, s := range l.Signatures {
			e := entry{data: s.Data, typ: l.Type}
			if l.Type == uefi.CertSHA256 && len(s.Data) == sha256.Size {
				e.id = [sha256.Size]byte(s.Data)
			} else {
				e.id = sha256.Sum256(s.Data)
			}
			out = append(out, e)
		}
	}
	return out
}

// certDesc names a certificate by its subject for people; the digest, not
// the name, decides. It reads only the subject (encoding/asn1, not
// crypto/x509, which would pull the network stack into policy).
func certDesc(der []byte) string {
	const unparsable = "certificate (unparsable subject)"
	var cert, tbs asn1.RawValue
	if _, err := asn1.Unmarshal(der, &cert); err != nil {
		return unparsable
	}
	if _, err := asn1.Unmarshal(cert.Bytes, &tbs); err != nil {
		return unparsable
	}
	// TBSCertificate: [0] version (optional), serialNumber, signature,
	// issuer, validity, subject, …
	rest := tbs.Bytes
	var field asn1.RawValue
	for i := 0; i < 6; i++ {
		var err error
		if rest, err = asn1.Unmarshal(rest, &field); err != nil {
			return unparsable
		}
		if i == 0 && !(field.Class == asn1.ClassContextSpecific && field.Tag == 0) {
			i++ // no version field: this was the serial number
		}
	}
	var rdn pkix.RDNSequence
	if rest, err := asn1.Unmarshal(field.FullBytes, &rdn); err != nil || len(rest) > 0 {
		return unparsable
	}
	var name pkix.Name
	name.FillFromRDNSequence(&rdn)
	if name.CommonName != "" {
		return "CN=" + name.CommonName
	}
	return name.String()
}

func containsDigest(ks []Known, d []byte) bool {
	return slices.ContainsFunc(ks, func(k Known) bool { return bytes.Equal(k.Digest, d) })
}

func (c *checker) signatureDB(name string, r *SignatureDBRule, v measuredVar) {
	if len(r.Digests) > 0 && !containsDigest(r.Digests, v.ev.Digest(c.e.Bank)) {
		c.fail(verdict.CodeBootRule, "%s (event #%d) has digest %x, the reference allows %s", name, v.ev.Index, v.ev.Digest(c.e.Bank), listKnown(r.Digests))
	}
	if len(r.Allow)+len(r.Require) == 0 {
		return
	}
	lists, err := uefi.ParseSignatureLists(v.v.Data)
	if err != nil {
		c.fail(verdict.CodeBootRule, "%s (event #%d) is malformed: %v", name, v.ev.Index, err)
		return
	}
	have := entriesOf(lists)
	if len(r.Allow) > 0 {
		if len(have) == 0 {
			c.fail(verdict.CodeBootRule, "%s (event #%d) is empty, the reference allows only %s", name, v.ev.Index, listKnown(r.Allow))
		}
		allowed := idSet(len(r.Allow), func(yield func([]byte)) {
			for _, k := range r.Allow {
				yield(k.Digest)
			}
		})
		var extra []string
		what := "an entry"
		for _, en := range have {
			if _, ok := allowed[en.id]; !ok {
				extra = append(extra, fmt.Sprintf("sha256 %x (%s)", en.id, en.desc()))
				if en.typ == uefi.CertX509 {
					what = "a certificate"
				}
			}
		}
		if len(extra) > 1 {
			what = fmt.Sprintf("%d entries", len(extra))
		}
		if len(extra) > 0 {
			c.fail(verdict.CodeBootRule, "%s contains %s not in the allowed set: %s", name, what, listed(extra))
		}
	}
	if len(r.Require) == 0 {
		return
	}
	present := idSet(len(have), func(yield func([]byte)) {
		for _, en := range have {
			yield(en.id[:])
		}
	})
	var missing []string
	for _, k := range r.Require {
		if _, ok := present[[sha256.Size]byte(k.Digest)]; len(k.Digest) != sha256.Size || !ok {
			missing = append(missing, "sha256 "+k.String())
		}
	}
	if len(missing) > 0 {
		what := "entry"
		if name == "dbx" {
			what = "revocation"
		}
		if len(missing) > 1 {
			what += "s"
		}
		c.fail(verdict.CodeBootRule, "%s lacks %d required %s: %s", name, len(missing), what, listed(missing))
	}
}

// idSet builds a set of SHA-256 entry names; Validate has made sure every
// digest of a rule is 32 bytes.
func idSet(n int, each func(yield func([]byte))) map[[sha256.Size]byte]struct{} {
	m := make(map[[sha256.Size]byte]struct{}, n)
	each(func(d []byte) {
		if len(d) == sha256.Size {
			m[[sha256.Size]byte(d)] = struct{}{}
		}
	})
	return m
}

// listed joins up to maxListed items and says how many more there are.
func listed(items []string) string {
	if len(items) <= maxListed {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:maxListed], ", "), len(items)-maxListed)
}

func listKnown(ks []Known) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = k.String()
	}
	return listed(s)
}

// measured is one event a digest-set rule looks at, with a name for people.
type measured struct {
	ev   eventlog.Event
	d    []byte
	name string
}

func (m measured) String() string {
	if m.name == "" {
		return fmt.Sprintf("#%d", m.ev.Index)
	}
	return fmt.Sprintf("#%d %s", m.ev.Index, printable(m.name))
}

// printable quotes an untrusted name for a reason, without escaping the
// backslashes of UEFI paths: runes that do not print become '?'.
func printable(s string) string {
	return `"` + strings.Map(func(r rune) rune {
		if r == '"' || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s) + `"`
}

// eventName is a description of an event for people: a boot application's
// file path (none when its device path names no file: an image GRUB loaded
// from memory), or the printable event data. Neither is covered by the digest.
func eventName(ev eventlog.Event) string {
	if ev.Type == eventlog.EvEFIBootServicesApp {
		p, _ := uefi.ImagePath(ev.Data)
		return p
	}
	return Description(ev)
}

func (c *checker) digestSet(r *DigestSetRule, typ uint32, what string) {
	var ms []measured
	for _, ev := range c.events {
		if ev.Type == typ {
			ms = append(ms, measured{ev, ev.Digest(c.e.Bank), eventName(ev)})
		}
	}
	if len(ms) == 0 {
		c.fail(verdict.CodeEventMissing, "no %s event: no %s was measured", eventlog.TypeName(typ), what)
		return
	}
	if len(r.Allow) > 0 {
		var extra []string
		for _, m := range ms {
			if !containsDigest(r.Allow, m.d) {
				extra = append(extra, fmt.Sprintf("%s %s has digest %x", what, m, m.d))
			}
		}
		if len(extra) > 0 {
			c.fail(verdict.CodeBootRule, "not in the allowed set: %s", listed(extra))
		}
	}
	var missing []string
	for _, k := range r.Require {
		if !slices.ContainsFunc(ms, func(m measured) bool { return bytes.Equal(m.d, k.Digest) }) {
			missing = append(missing, k.String())
		}
	}
	if len(missing) > 0 {
		c.fail(verdict.CodeBootRule, "the required %s %s was not measured", what, listed(missing))
	}
	if len(r.Sequence) > 0 {
		for i, k := range r.Sequence {
			if i >= len(ms) {
				c.fail(verdict.CodeBootRule, "%d %ss were measured, the sequence expects %d: next would be %s", len(ms), what, len(r.Sequence), k)
				return
			}
			if !bytes.Equal(ms[i].d, k.Digest) {
				c.fail(verdict.CodeBootRule, "%s %s has digest %x, the sequence expects %s", what, ms[i], ms[i].d, k)
				return
			}
		}
		if len(ms) > len(r.Sequence) {
			x := ms[len(r.Sequence)]
			c.fail(verdict.CodeBootRule, "unexpected %s %s (digest %x) after the expected sequence of %d", what, x, x.d, len(r.Sequence))
		}
	}
}

// grubText is one GRUB PCR 8 text whose digest covers it.
type grubText struct {
	ev   eventlog.Event
	kind uefi.GrubKind
	text string
}

// grubTexts decodes the PCR's GRUB EV_IPL events of the given kinds. The
// digest covers the text but not its prefix (the kind), which is only what
// the data claims: an attacker may relabel a text, never change it. A text
// of a wanted kind that the digest does not cover is a failure; a text
// relabelled away from a wanted kind is simply not seen (a kernel rule then
// finds no command line, and fails).
func (c *checker) grubTexts(kinds ...uefi.GrubKind) ([]grubText, bool) {
	var out []grubText
	ok := true
	for _, ev := range c.events {
		if ev.Type != eventlog.EvIPL {
			continue
		}
		kind, text := uefi.GrubText(ev.Data)
		if !slices.Contains(kinds, kind) {
			continue
		}
		if !c.covers(ev, uefi.GrubMeasured(text)...) {
			c.fail(verdict.CodeBootRule, "event #%d EV_IPL %s: its text does not hash to its digest, so what GRUB measured is unknown", ev.Index, clip(text))
			ok = false
			continue
		}
		out = append(out, grubText{ev, kind, text})
	}
	return out, ok
}

func clip(s string) string {
	const max = 200
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}

func matchesAny(ps []Pattern, s string) bool {
	return slices.ContainsFunc(ps, func(p Pattern) bool { return p.Match(s) })
}

func (c *checker) cmdline(r *CmdlineRule) {
	var kinds []uefi.GrubKind
	if len(r.Kernel) > 0 {
		kinds = append(kinds, uefi.GrubKernelCmdline)
	}
	if len(r.Commands) > 0 {
		kinds = append(kinds, uefi.GrubCommand)
	}
	texts, ok := c.grubTexts(kinds...)
	if !ok {
		return
	}
	if len(r.Kernel) > 0 {
		n := 0
		for _, t := range texts {
			if t.kind != uefi.GrubKernelCmdline {
				continue
			}
			n++
			if !matchesAny(r.Kernel, t.text) {
				c.fail(verdict.CodeBootRule, "kernel command line %s (event #%d) matches no allowed pattern", clip(t.text), t.ev.Index)
			}
		}
		if n == 0 {
			c.fail(verdict.CodeEventMissing, "no kernel command line was measured (GRUB's EV_IPL \"kernel_cmdline: …\")")
		}
	}
	if len(r.Commands) > 0 {
		var bad []string
		for _, t := range texts {
			if t.kind == uefi.GrubCommand && !matchesAny(r.Commands, t.text) {
				bad = append(bad, fmt.Sprintf("%s (event #%d)", clip(t.text), t.ev.Index))
			}
		}
		if len(bad) > 0 {
			c.fail(verdict.CodeBootRule, "GRUB ran commands that match no allowed pattern: %s", listed(bad))
		}
	}
}
