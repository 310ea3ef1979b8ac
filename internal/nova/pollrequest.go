package nova

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// parsePollRequest decodes a PollHosts body into the requested names, in
// request order, duplicates kept (each gets its own answer entry).
//
// Accepted, because Nova and OAT's clients sent them:
//
//	{"count": 2, "hosts": ["a", "b"]}  Nova Grizzly–Pike
//	{"count": 1, "hosts": "a"}         Folsom: one bare string
//	{"hosts": ["a"]}                   OAT's CLI: no count
//
// count is advisory: it must be a non-negative integer when present, but it
// is not compared with the names, because Folsom computed it as len() of the
// bare string (its length in characters). Everything else is rejected: keys
// other than count and hosts (no client sends them, and a key we ignored
// might be one a client expects us to honour), duplicate keys, null, names
// that are not strings or are longer than MaxHostName, more than MaxPollHosts
// names, invalid UTF-8 (it could not be echoed byte for byte) and trailing
// data. An empty name is accepted and answered unknown, like any name that
// is not an attested host.
//
// The body is walked once by a small scanner that checks the JSON syntax of
// exactly this subset itself (anything outside it is refused anyway): the
// scheduler waits on this call, and encoding/json's general validator alone
// cost more than the rest of the request.
func parsePollRequest(body []byte) ([]string, error) {
	if !utf8.Valid(body) {
		return nil, errors.New("request body is not UTF-8")
	}
	s := &pollScanner{b: body}
	if err := s.expect('{'); err != nil {
		return nil, err
	}
	var (
		hosts             []string
		seenCount, seenHs bool
	)
	if s.ws(); s.peek() == '}' {
		s.i++
	} else {
		for {
			if s.ws(); s.peek() != '"' {
				return nil, s.syntax("want a key")
			}
			key, err := s.str()
			if err != nil {
				return nil, err
			}
			if err := s.expect(':'); err != nil {
				return nil, err
			}
			s.ws()
			switch {
			case key == "count" && !seenCount:
				seenCount = true
				err = s.count()
			case key == "hosts" && !seenHs:
				seenHs = true
				hosts, err = s.hosts()
			case key == "count" || key == "hosts":
				err = fmt.Errorf("request body has %q twice", key)
			default:
				err = fmt.Errorf("request body has unknown key %q (only count and hosts)", key)
			}
			if err != nil {
				return nil, err
			}
			if s.ws(); s.peek() == ',' {
				s.i++
				continue
			}
			if err := s.expect('}'); err != nil {
				return nil, err
			}
			break
		}
	}
	if s.ws(); s.i != len(s.b) {
		return nil, s.syntax("data after the JSON object")
	}
	if !seenHs {
		return nil, errors.New(`request body has no "hosts"`)
	}
	return hosts, nil
}

// pollScanner reads a PollHosts body from b[i:].
type pollScanner struct {
	b []byte
	i int
}

func (s *pollScanner) syntax(msg string) error {
	return fmt.Errorf("request body is not valid JSON at byte %d: %s", s.i, msg)
}

// ws skips JSON whitespace.
func (s *pollScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte, or 0 at the end.
func (s *pollScanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *pollScanner) expect(c byte) error {
	if s.ws(); s.peek() != c {
		return s.syntax(fmt.Sprintf("want %q", c))
	}
	s.i++
	return nil
}

// str reads the string literal at s.i. Without escapes its bytes are the
// value (control characters are refused here, UTF-8 was checked for the
// whole body); with escapes encoding/json decodes and checks the literal.
func (s *pollScanner) str() (string, error) {
	start := s.i
	escaped := false
	for s.i++; s.i < len(s.b); s.i++ {
		// Skip the ordinary bytes in a tight loop: most names have only those.
		for s.i < len(s.b) && s.b[s.i] >= 0x20 && s.b[s.i] != '"' && s.b[s.i] != '\\' {
			s.i++
		}
		if s.i == len(s.b) {
			break
		}
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			lit := s.b[start:s.i]
			if !escaped {
				return string(lit[1 : len(lit)-1]), nil
			}
			var v string
			if err := json.Unmarshal(lit, &v); err != nil {
				return "", fmt.Errorf("request body has a bad string at byte %d: %w", start, err)
			}
			return v, nil
		case c == '\\':
			escaped = true
			s.i++ // the escaped byte cannot end the string
		case c < 0x20:
			return "", s.syntax("control character in a string")
		}
	}
	return "", s.syntax("unterminated string")
}

// count checks the count value: a JSON number that is a non-negative
// integer.
func (s *pollScanner) count() error {
	start := s.i
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		s.i++
	}
	digits := s.b[start:s.i]
	switch next := s.peek(); {
	case len(digits) == 0, next == '.', next == 'e', next == 'E':
		return fmt.Errorf("count must be a non-negative integer, at byte %d", start)
	case len(digits) > 1 && digits[0] == '0':
		return s.syntax("number with a leading zero")
	}
	if _, err := strconv.ParseUint(string(digits), 10, 63); err != nil {
		return fmt.Errorf("count must be a non-negative integer, got %s", digits)
	}
	return nil
}

// hosts reads the hosts value: one string (Folsom) or an array of strings.
func (s *pollScanner) hosts() ([]string, error) {
	switch s.peek() {
	case '"':
		name, err := s.str()
		if err != nil {
			return nil, err
		}
		if err := checkName(name, 0); err != nil {
			return nil, err
		}
		return []string{name}, nil
	case '[':
		s.i++
	default:
		return nil, fmt.Errorf("hosts must be a list of names or one name, at byte %d", s.i)
	}
	hosts := []string{}
	if s.ws(); s.peek() == ']' {
		s.i++
		return hosts, nil
	}
	for {
		if len(hosts) == MaxPollHosts {
			return nil, fmt.Errorf("more than %d hosts in one request", MaxPollHosts)
		}
		if s.ws(); s.peek() != '"' {
			return nil, fmt.Errorf("hosts[%d] must be a string, at byte %d", len(hosts), s.i)
		}
		name, err := s.str()
		if err != nil {
			return nil, err
		}
		if err := checkName(name, len(hosts)); err != nil {
			return nil, err
		}
		hosts = append(hosts, name)
		if s.ws(); s.peek() == ',' {
			s.i++
			continue
		}
		if err := s.expect(']'); err != nil {
			return nil, err
		}
		return hosts, nil
	}
}

func checkName(s string, i int) error {
	if len(s) > MaxHostName {
		return fmt.Errorf("hosts[%d] is %d bytes long, more than %d", i, len(s), MaxHostName)
	}
	return nil
}
