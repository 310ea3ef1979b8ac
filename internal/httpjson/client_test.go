package httpjson_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"trustpool/internal/httpjson"
)

func TestClient(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Authorization") != "Bearer tok" {
				http.Error(w, "headers", http.StatusBadRequest)
				return
			}
			_, _ = io.Copy(w, r.Body)
		case "/extra":
			_, _ = io.WriteString(w, `{"a":1,"b":2}`)
		case "/trailing":
			_, _ = io.WriteString(w, `{"a":1} {"a":2}`)
		case "/big":
			_, _ = io.WriteString(w, `{"a":1,"pad":"`+strings.Repeat("x", 100)+`"}`)
		case "/denied":
			httpjson.JSON(w, http.StatusForbidden, httpjson.ErrorBody{Error: "role reader may not"})
		case "/html":
			http.Error(w, "<html>oops</html>", http.StatusBadGateway)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer srv.Close()
	type answer struct {
		A int `json:"a"`
	}
	c := &httpjson.Client{HTTP: srv.Client(), Base: srv.URL, Token: "tok", MaxAnswer: 64}
	ctx := context.Background()

	var got answer
	if err := c.Do(ctx, "POST", "/echo", answer{A: 7}, &got); err != nil || got.A != 7 {
		t.Fatalf("echo: %+v, %v", got, err)
	}
	if err := c.Do(ctx, "GET", "/empty", nil, &got); err != nil {
		t.Fatalf("empty answer: %v", err)
	}
	for _, tc := range []struct {
		path, want string
		status     int
	}{
		{"/extra", `unknown field "b"`, 0},
		{"/trailing", "after the JSON value", 0},
		{"/big", "body exceeds 64 bytes", 0},
		{"/denied", "GET /denied: 403 Forbidden: role reader may not", http.StatusForbidden},
		{"/html", "502 Bad Gateway: <html>oops</html>", http.StatusBadGateway},
	} {
		t.Run(tc.path, func(t *testing.T) {
			err := c.Do(ctx, "GET", tc.path, nil, &answer{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, httpjson.ErrAnswer) {
				t.Fatalf("err = %v, want one matching ErrAnswer that says %q", err, tc.want)
			}
			var se *httpjson.StatusError
			if errors.As(err, &se) != (tc.status != 0) || (se != nil && se.Code != tc.status) {
				t.Fatalf("StatusError = %+v, want status %d", se, tc.status)
			}
		})
	}

	lenient := *c
	lenient.AllowUnknownFields = true
	if err := lenient.Do(ctx, "GET", "/extra", nil, &got); err != nil || got.A != 1 {
		t.Fatalf("lenient: %+v, %v", got, err)
	}

	srv.Close()
	if err := c.Do(ctx, "GET", "/echo", nil, nil); err == nil || errors.Is(err, httpjson.ErrAnswer) {
		t.Fatalf("unreachable server: %v, want a transport error that is not ErrAnswer", err)
	}
}
