package policy

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"trustpool/internal/evidence"
	"trustpool/internal/verdict"
)

// TestDocBootRules loads the boot-rules example of docs/known-good.md: it is
// a valid change document, and the RHEL 8 host it was written for matches
// its references, so the page's example is a promise that holds.
func TestDocBootRules(t *testing.T) {
	doc, err := os.ReadFile("../../docs/known-good.md")
	if err != nil {
		t.Fatal(err)
	}
	const marker = "<!-- policy test TestDocBootRules loads the next json block -->"
	_, after, ok := strings.Cut(string(doc), marker)
	if !ok {
		t.Fatalf("docs/known-good.md has no %q", marker)
	}
	_, block, ok := strings.Cut(after, "```json\n")
	if ok {
		block, _, ok = strings.Cut(block, "```")
	}
	if !ok {
		t.Fatal("no json block after the marker")
	}
	var c Change
	dec := json.NewDecoder(strings.NewReader(block))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("the example: %v", err)
	}
	if err := c.Validate(func(string) bool { return false }); err != nil {
		t.Fatalf("the example: %v", err)
	}
	refs := map[string]*Reference{}
	for _, r := range c.References {
		r.Version = 1
		refs[r.Name] = r
	}
	p := Approve(nil, DefaultName, c.References)
	m := realHost(t, "rhel8-uefi.bin", evidence.SHA256)
	if res := Evaluate(p, refs, m); res.Level != verdict.Trusted || len(res.Matched) != 2 {
		t.Fatalf("the RHEL 8 host against the example: %s %v", res.Level, res.Reasons)
	}
	// And the rules decide: a dbx revocation the host lacks, or another
	// console, makes it untrusted.
	for _, tc := range []struct{ from, to, want string }{
		{"90244cc221e00c1fe0a7b78b3ce945dd73bf1633019eb6c15fa5646f9c8d2e1e", strings.Repeat("5a", 32), "PCR 7: dbx lacks 1 required revocation"},
		{"console=ttyS0,38400n8", "console=tty0", "PCR 8: kernel command line"},
	} {
		var c2 Change
		if err := json.Unmarshal(bytes.Replace([]byte(block), []byte(tc.from), []byte(tc.to), 1), &c2); err != nil {
			t.Fatal(err)
		}
		refs := map[string]*Reference{}
		for _, r := range c2.References {
			refs[r.Name] = r
		}
		res := Evaluate(p, refs, m)
		if res.Level != verdict.Untrusted || !strings.Contains(res.Reasons[0].Message, tc.want) {
			t.Errorf("with %s: %s %v, want a reason saying %q", tc.to, res.Level, res.Reasons, tc.want)
		}
	}
}
