package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
)

// output is how the operator's commands print what they read: a table (or
// a text view) for people by default, or --output json for programs, whose
// documents docs/cli.md lists. --json stays as the alias of --output json
// that scripts already use. Progress of long operations goes to standard
// error (see progress), never into the JSON on standard output.
type output struct {
	format string // "table" or "json"
	// by is the flag that chose format ("" for the default), to refuse
	// --json beside --output table.
	by string
	// progress is --progress: nil to follow whether standard error is a
	// terminal.
	progress *bool
}

// Output formats.
const (
	formatTable = "table"
	formatJSON  = "json"
)

// register adds --output, --json and --progress to fs (the root command's
// persistent flags, which every command inherits).
func (o *output) register(fs *pflag.FlagSet) {
	o.format = formatTable
	fs.Var(formatFlag{o}, "output", "how to print data: table (for people) or json (for programs; docs/cli.md)")
	fs.VarPF(jsonFlag{o}, "json", "", "print JSON: the same as --output json").NoOptDefVal = "true"
	fs.VarPF(progressFlag{o}, "progress", "", "report the progress of long operations on standard error (auto: when standard error is a terminal)").NoOptDefVal = "true"
}

// JSON reports whether JSON was asked for.
func (o *output) JSON() bool { return o.format == formatJSON }

// print writes v as indented JSON, or as table writes it.
func (o *output) print(w io.Writer, v any, table func(io.Writer) error) error {
	if o.JSON() {
		return printJSON(w, v)
	}
	return table(w)
}

// printJSON writes v indented.
func printJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

// formatFlag is --output.
type formatFlag struct{ o *output }

func (f formatFlag) String() string {
	if f.o == nil || f.o.format == "" {
		return formatTable
	}
	return f.o.format
}
func (f formatFlag) Type() string { return "json|table" }
func (f formatFlag) Set(s string) error {
	if s != formatTable && s != formatJSON {
		return fmt.Errorf("%q: want json or table", s)
	}
	if f.o.by == "--json" && s != formatJSON {
		return errors.New("--json is --output json: give one of them")
	}
	f.o.format, f.o.by = s, "--output"
	return nil
}

// jsonFlag is --json, a boolean flag setting --output json.
type jsonFlag struct{ o *output }

func (f jsonFlag) String() string   { return strconv.FormatBool(f.o != nil && f.o.by == "--json") }
func (f jsonFlag) Type() string     { return "bool" }
func (f jsonFlag) IsBoolFlag() bool { return true }
func (f jsonFlag) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil || !b {
		return err // --json=false leaves the format alone
	}
	if f.o.by == "--output" && f.o.format != formatJSON {
		return errors.New("--json is --output json: give one of them")
	}
	f.o.format, f.o.by = formatJSON, "--json"
	return nil
}

// progressFlag is --progress (or --progress=false to silence it).
type progressFlag struct{ o *output }

func (f progressFlag) String() string {
	if f.o == nil || f.o.progress == nil {
		return "auto"
	}
	return strconv.FormatBool(*f.o.progress)
}
func (f progressFlag) Type() string     { return "bool" }
func (f progressFlag) IsBoolFlag() bool { return true }
func (f progressFlag) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	f.o.progress = &b
	return nil
}

// progressTo returns the progress reporter writing to w (a command's
// standard error), or nil when no progress is to be shown: --progress=false,
// or no --progress and w not a terminal.
func (o *output) progressTo(w io.Writer) *progress {
	tty := isTerminal(w)
	if o.progress != nil && !*o.progress || o.progress == nil && !tty {
		return nil
	}
	p := &progress{w: w, tty: tty, every: 5 * time.Second}
	if tty {
		p.every = 100 * time.Millisecond
	}
	return p
}

// isTerminal reports whether w is a character device (a terminal; also
// /dev/null, where progress costs nothing).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress reports how far a long operation is: on a terminal one line
// rewritten in place ("\renrolled 4000/10000"), elsewhere a line every 5
// s and at each stage's end. A nil *progress reports nothing.
type progress struct {
	w     io.Writer
	tty   bool
	every time.Duration
	now   func() time.Time // nil: time.Now

	mu    sync.Mutex // guards what follows
	last  time.Time  // when a line was last written
	stage string     // the stage last reported
	ended bool       // the stage's end was reported
	open  bool       // a rewritten line is on screen, not yet ended
}

// Report says that done of total are done in stage (total 0: unknown). It
// is safe for concurrent use.
func (p *progress) Report(stage string, done, total int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if p.now != nil {
		now = p.now()
	}
	end := total > 0 && done >= total
	switch {
	case stage != p.stage:
		p.endLine()
	case p.ended, !end && now.Sub(p.last) < p.every:
		return
	}
	p.stage, p.last, p.ended = stage, now, end
	line := fmt.Sprintf("%s %d", stage, done)
	if total > 0 {
		line = fmt.Sprintf("%s %d/%d", stage, done, total)
	}
	if p.tty {
		// \033[K clears what a longer line before left.
		fmt.Fprintf(p.w, "\r%s\033[K", line)
		p.open = true
		if end {
			p.endLine()
		}
		return
	}
	fmt.Fprintln(p.w, line)
}

// Write writes b (log lines) below the progress line, which the next
// report draws again: logs and progress share standard error.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLine()
	p.stage = "" // redraw at the next report
	return p.w.Write(b)
}

// Done ends the line on screen, before other output follows.
func (p *progress) Done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endLine()
	p.stage = ""
}

func (p *progress) endLine() {
	if p.open {
		fmt.Fprintln(p.w)
		p.open = false
	}
}

// objectTable prints a JSON object for people: a name and a value a line,
// in the object's order, nested objects flattened to dotted names
// (attest_latency_ms.p99), a list of strings one per line.
func objectTable(w io.Writer, doc []byte) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if err := flatten(doc, "", func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }); err != nil {
		return err
	}
	return tw.Flush()
}

func flatten(doc []byte, prefix string, emit func(name, value string)) error {
	dec := json.NewDecoder(bytes.NewReader(doc))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("flatten: not a JSON object: %.40q", doc)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		name := prefix + t.(string) // an object's keys are strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		var s string
		var ss []string
		switch {
		case raw[0] == '{':
			if err := flatten(raw, name+".", emit); err != nil {
				return err
			}
		case json.Unmarshal(raw, &s) == nil:
			emit(name, s)
		case json.Unmarshal(raw, &ss) == nil:
			for i, s := range ss {
				if i > 0 {
					name = ""
				}
				emit(name, s)
			}
		default:
			emit(name, string(raw))
		}
	}
	return nil
}
