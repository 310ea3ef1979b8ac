package main

import (
	"io"
	"log/slog"
)

// newLogger writes log lines to w in format (text, or json: one object a
// line, for log collectors), from level up. The config's Validate has
// checked the format.
func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
