package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

func TestLogFormats(t *testing.T) {
	var b bytes.Buffer
	newLogger(&b, "json", slog.LevelInfo).Info("attestation server listening", "url", "https://127.0.0.1:8443")
	var line map[string]any
	if err := json.Unmarshal(b.Bytes(), &line); err != nil || line["msg"] != "attestation server listening" || line["url"] != "https://127.0.0.1:8443" {
		t.Fatalf("json log line %q: %v", b.String(), err)
	}
	b.Reset()
	newLogger(&b, "text", slog.LevelWarn).Info("not shown")
	newLogger(&b, "text", slog.LevelWarn).Warn("shown", "k", "v")
	if out := b.String(); strings.Contains(out, "not shown") || !strings.Contains(out, "msg=shown k=v") {
		t.Fatalf("text log: %q", out)
	}
}
