package evidence

import "fmt"

// MaxHostName is the longest host name accepted (a DNS name's limit).
const MaxHostName = 255

// ValidateHostName accepts what Nova reports as a hypervisor host name: a
// short name or an FQDN of letters, digits, '.', '-' and '_'.
func ValidateHostName(s string) error {
	if len(s) == 0 || len(s) > MaxHostName {
		return fmt.Errorf("host name is %d bytes, want 1 to %d", len(s), MaxHostName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("host name %q: character %q not allowed", s, c)
		}
	}
	return nil
}
