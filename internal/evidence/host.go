package evidence

import (
	"fmt"
	"net/netip"
	"strings"
)

// MaxHostName bounds a host name a scheduler may ask about (PollHosts
// reads up to this many bytes a name). Enrolled names are DNS names and
// shorter (MaxDNSName).
const MaxHostName = 255

// MaxDNSName is the longest enrollable host name: a DNS name's limit.
const MaxDNSName = 253

// CanonicalHostName returns s in the one form a host is known by: a DNS
// name in lower case (labels of letters, digits and inner hyphens, 1 to 63
// bytes each, no trailing dot). Two spellings of one name are one host,
// and a certificate names exactly this form. IP literals are names only
// when allowIP is set: an address belongs to whoever holds it, not to a
// TPM.
func CanonicalHostName(s string, allowIP bool) (string, error) {
	if len(s) == 0 || len(s) > MaxDNSName {
		return "", fmt.Errorf("host name is %d bytes, want 1 to %d", len(s), MaxDNSName)
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if !allowIP || a.Zone() != "" {
			return "", fmt.Errorf("host name %q is an IP address; hosts are named by DNS name", s)
		}
		return a.String(), nil
	}
	name := strings.ToLower(s)
	for label := range strings.SplitSeq(name, ".") {
		if err := checkLabel(label); err != nil {
			return "", fmt.Errorf("host name %q: %w", s, err)
		}
	}
	return name, nil
}

func checkLabel(l string) error {
	if len(l) == 0 || len(l) > 63 {
		return fmt.Errorf("label %q is %d bytes, want 1 to 63", l, len(l))
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with '-'", l)
	}
	for i := 0; i < len(l); i++ {
		if c := l[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}

// ValidateHostName checks that s is a canonical host name (see
// CanonicalHostName), an IP literal allowed.
func ValidateHostName(s string) error {
	c, err := CanonicalHostName(s, true)
	if err != nil {
		return err
	}
	if c != s {
		return fmt.Errorf("host name %q is not in canonical form %q", s, c)
	}
	return nil
}
