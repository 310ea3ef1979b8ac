package server_test

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"trustpool/internal/api"
)

// documented reads the operations under paths: in the OpenAPI document as
// "METHOD /path", with each one's x-trustpool-role. The document is
// hand-written in one layout (paths at two spaces, methods at four), which
// this relies on; a path without operations fails.
func documented(t *testing.T, doc []byte) map[string]string {
	t.Helper()
	var (
		pathRE   = regexp.MustCompile(`^  (/\S*):$`)
		methodRE = regexp.MustCompile(`^    (get|put|post|delete|patch|head|options):$`)
		roleRE   = regexp.MustCompile(`^      x-trustpool-role: (\S+)$`)
		ops      = map[string]string{}
		in       bool
		path, op string
		counted  = map[string]int{}
	)
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if !strings.HasPrefix(line, " ") {
			in = line == "paths:"
			continue
		}
		if !in {
			continue
		}
		if m := pathRE.FindStringSubmatch(line); m != nil {
			path, op = m[1], ""
			counted[path] = 0
		} else if m := methodRE.FindStringSubmatch(line); m != nil {
			op = strings.ToUpper(m[1]) + " " + path
			if _, dup := ops[op]; dup {
				t.Errorf("openapi.yaml documents %s twice", op)
			}
			ops[op] = ""
			counted[path]++
		} else if m := roleRE.FindStringSubmatch(line); m != nil && op != "" {
			ops[op] = m[1]
		}
	}
	for p, n := range counted {
		if n == 0 {
			t.Errorf("openapi.yaml: %s has no operations", p)
		}
	}
	return ops
}

// TestOpenAPICoversRoutes: every route the server mounts is in the OpenAPI
// document with a role, every documented operation is mounted, and the
// server serves the document to anyone at /v1/openapi.yaml. A route
// mounted for every method (PollHosts) is documented as its POST.
func TestOpenAPICoversRoutes(t *testing.T) {
	e := startServer(t)
	doc := documented(t, api.OpenAPI())
	if len(doc) < 10 {
		t.Fatalf("openapi.yaml: only %d operations found: is the layout still two spaces per path, four per method?", len(doc))
	}
	mounted := map[string]bool{}
	for _, r := range e.srv.Routes() {
		if !strings.Contains(r, " ") {
			r = "POST " + r
		}
		mounted[r] = true
		role, ok := doc[r]
		switch {
		case !ok:
			t.Errorf("the server mounts %q, which openapi.yaml does not document", r)
		case !slices.Contains([]string{"agent", "anyone", "reader", "scheduler", "admin"}, role):
			t.Errorf("openapi.yaml: %s has x-trustpool-role %q, want agent, anyone, reader, scheduler or admin", r, role)
		}
	}
	for op := range doc {
		if !mounted[op] {
			t.Errorf("openapi.yaml documents %s, which the server does not mount", op)
		}
	}

	resp, err := e.http.Get(e.srv.URL() + api.OpenAPIPath) // no token
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, api.OpenAPI()) {
		t.Errorf("GET %s without a token: %d, %d bytes; want 200 and the document (%d bytes)", api.OpenAPIPath, resp.StatusCode, len(body), len(api.OpenAPI()))
	}
	if !bytes.Contains(body, []byte("\nopenapi: 3.1.0\n")) {
		t.Errorf("GET %s: not an OpenAPI 3.1 document", api.OpenAPIPath)
	}
}
