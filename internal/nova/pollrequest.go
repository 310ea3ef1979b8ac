package nova

import (
	"bytes"
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
// that are not strings or are longer than MaxHostName, more than MaxPollHost
// names, invalid UTF-8 (it could not be echoed byte for byte) and trailing
// data. An empty name is accepted and answered unknown, like any name that
// is not an attested host.
//
// The body is first checked to be UTF-8 and one valid JSON value; the object
// is then walked by hand over those checked bytes, because encoding/json's
// Decoder costs several times more per name and the scheduler waits on this.
func parsePollRequest(body []byte) ([]string, error) {
	if !utf8.Valid(body) {
		return nil, errors.New("request body is not UTF-8")
	}
	if !json.Valid(body) {
		var raw json.RawMessage
		err := json.Unmarshal(body, &raw) // only for the error's position
		return nil, fmt.Errorf("request body is not JSON: %w", err)
	}
	p := skipSpace(body)
	if p[0] != '{' {
		return nil, fmt.Errorf("request body must be a JSON object, got %.20s", p)
	}
	var (
		hosts             []string
		seenCount, seenHs bool
	)
	p = skipSpace(p[1:])
	for p[0] != '}' {
		if p[0] == ',' {
			p = skipSpace(p[1:])
		}
		end := stringEnd(p)
		key, err := unquote(p[:end])
		if err != nil {
			return nil, err
		}
		p = skipSpace(skipSpace(p[end:])[1:]) // past the ':'
		switch {
		case key == "count" && !seenCount:
			seenCount = true
			if p, err = decodeCount(p); err != nil {
				return nil, err
			}
		case key == "hosts" && !seenHs:
			seenHs = true
			if hosts, p, err = decodeHosts(p); err != nil {
				return nil, err
			}
		case key == "count" || key == "hosts":
			return nil, fmt.Errorf("request body has %q twice", key)
		default:
			return nil, fmt.Errorf("request body has unknown key %q (only count and hosts)", key)
		}
		p = skipSpace(p)
	}
	if !seenHs {
		return nil, errors.New(`request body has no "hosts"`)
	}
	return hosts, nil
}

// decodeCount checks the count value at the start of p and returns the rest.
func decodeCount(p []byte) ([]byte, error) {
	n := 0
	for n < len(p) && bytes.IndexByte([]byte("0123456789.eE+-"), p[n]) >= 0 {
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("count must be a number, got %.20s", p)
	}
	if _, err := strconv.ParseUint(string(p[:n]), 10, 63); err != nil {
		return nil, fmt.Errorf("count must be a non-negative integer, got %s", p[:n])
	}
	return p[n:], nil
}

// decodeHosts reads the hosts value at the start of p, one string (Folsom)
// or an array of strings, and returns the names and the rest of p.
func decodeHosts(p []byte) ([]string, []byte, error) {
	switch p[0] {
	case '"':
		end := stringEnd(p)
		name, err := unquote(p[:end])
		if err != nil {
			return nil, nil, err
		}
		if err := checkName(name, 0); err != nil {
			return nil, nil, err
		}
		return []string{name}, p[end:], nil
	case '[':
	default:
		return nil, nil, fmt.Errorf("hosts must be a list of names or one name, got %.20s", p)
	}
	hosts := []string{}
	p = skipSpace(p[1:])
	if p[0] == ']' {
		return hosts, p[1:], nil
	}
	for {
		if len(hosts) == MaxPollHost {
			return nil, nil, fmt.Errorf("more than %d hosts in one request", MaxPollHost)
		}
		if p[0] != '"' {
			return nil, nil, fmt.Errorf("hosts[%d] must be a string, got %.20s", len(hosts), p)
		}
		end := stringEnd(p)
		name, err := unquote(p[:end])
		if err != nil {
			return nil, nil, fmt.Errorf("hosts[%d]: %w", len(hosts), err)
		}
		if err := checkName(name, len(hosts)); err != nil {
			return nil, nil, err
		}
		hosts = append(hosts, name)
		p = skipSpace(p[end:])
		if p[0] == ']' {
			return hosts, p[1:], nil
		}
		p = skipSpace(p[1:]) // the ',' that valid JSON has here
	}
}

func checkName(s string, i int) error {
	if len(s) > MaxHostName {
		return fmt.Errorf("hosts[%d] is %d bytes long, more than %d", i, len(s), MaxHostName)
	}
	return nil
}

// stringEnd returns the length of the JSON string literal at the start of b,
// quotes included. b is known to be valid JSON.
func stringEnd(b []byte) int {
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++ // the escaped byte cannot end the string
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// unquote decodes one valid JSON string literal. Without escapes the bytes
// between the quotes are the value (the body was checked to be UTF-8).
func unquote(lit []byte) (string, error) {
	if bytes.IndexByte(lit, '\\') < 0 {
		return string(lit[1 : len(lit)-1]), nil
	}
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return "", fmt.Errorf("decode name: %w", err)
	}
	return s, nil
}

func skipSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\n' || b[0] == '\r') {
		b = b[1:]
	}
	return b
}
