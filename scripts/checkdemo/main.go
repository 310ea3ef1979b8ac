// Command checkdemo checks the output of `trustpool demo --once --json`
// against the demo's contract: how many hosts are trusted and untrusted, and
// that each named untrusted host has a reason naming the expected PCR (and
// class). CI runs it on a real demo run.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
)

type reason struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	PCR     *int   `json:"pcr"`
	Class   string `json:"class"`
}

type pool struct {
	Hosts []struct {
		Host    string   `json:"host_name"`
		Level   string   `json:"trust_lvl"`
		VTime   string   `json:"vtime"`
		Reasons []reason `json:"reasons"`
	} `json:"hosts"`
}

type expectations []string

func (e *expectations) String() string     { return strings.Join(*e, ",") }
func (e *expectations) Set(s string) error { *e = append(*e, s); return nil }

func main() {
	trusted := flag.Int("trusted", -1, "hosts that must be trusted")
	untrusted := flag.Int("untrusted", -1, "hosts that must be untrusted")
	var want expectations
	flag.Var(&want, "reason", "HOST=PCR[:CLASS]: that host is untrusted with a reason naming PCR (and class); repeatable")
	flag.Parse()
	if err := check(*trusted, *untrusted, want); err != nil {
		fmt.Fprintln(os.Stderr, "checkdemo:", err)
		os.Exit(1)
	}
	fmt.Println("checkdemo: the demo's contract holds")
}

func check(trusted, untrusted int, want expectations) error {
	var p pool
	dec := json.NewDecoder(os.Stdin)
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("demo output is not one JSON object: %w", err)
	}
	count := map[string]int{}
	for _, h := range p.Hosts {
		if h.Host == "" || h.VTime == "" {
			return fmt.Errorf("host entry without host_name or vtime: %+v", h)
		}
		count[h.Level]++
	}
	if trusted >= 0 && count["trusted"] != trusted {
		return fmt.Errorf("%d trusted hosts, want %d: %+v", count["trusted"], trusted, p.Hosts)
	}
	if untrusted >= 0 && count["untrusted"] != untrusted {
		return fmt.Errorf("%d untrusted hosts, want %d: %+v", count["untrusted"], untrusted, p.Hosts)
	}
	for _, w := range want {
		host, spec, ok := strings.Cut(w, "=")
		pcrS, class, _ := strings.Cut(spec, ":")
		pcr, err := strconv.Atoi(pcrS)
		if !ok || err != nil {
			return fmt.Errorf("-reason %q: want HOST=PCR[:CLASS]", w)
		}
		if err := hasReason(p, host, pcr, class); err != nil {
			return err
		}
	}
	return nil
}

func hasReason(p pool, host string, pcr int, class string) error {
	for _, h := range p.Hosts {
		if h.Host != host {
			continue
		}
		if h.Level != "untrusted" {
			return fmt.Errorf("%s is %s, want untrusted", host, h.Level)
		}
		for _, r := range h.Reasons {
			if r.PCR != nil && *r.PCR == pcr && (class == "" || r.Class == class) {
				return nil
			}
		}
		return fmt.Errorf("%s: no reason names PCR %d%s: %+v", host, pcr, map[bool]string{true: " and class " + class}[class != ""], h.Reasons)
	}
	return fmt.Errorf("no host %s in the demo's output", host)
}
