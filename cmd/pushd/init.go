package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/pushd/pushd/internal/infer"
)

// runInit is `pushd init`: a complete, commented starter config with the
// schema inferred from sample events on standard input.
func runInit(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pushd init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	src := fs.String("source", "", "where the events come from: stdin, kafka or http (required)")
	table := fs.String("table", "Events", "the target table (the dataset and the pipeline are named after it)")
	sample := fs.Int("sample", infer.DefaultSample, "read at most N events (0: all)")
	out := fs.String("o", "", "write the config to this file (it must not exist) instead of standard output")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pushd init --source stdin|kafka|http [--table NAME] [-o FILE] < sample.ndjson")
		fmt.Fprintln(stderr, "\nReads sample events (NDJSON) from standard input and writes a complete, commented")
		fmt.Fprintln(stderr, "starter config: the source, the embedded emulator to try it at once, the real Power BI's")
		fmt.Fprintln(stderr, "auth section to fill in, the target, the schema inferred as by `pushd schema infer`, and")
		fmt.Fprintln(stderr, "batch and limits at their documented defaults.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nExit codes: 0 written, 1 the input could not be read or inferred (or -o failed), 2 bad flags.")
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 || *sample < 0 || *table == "" {
		fs.Usage()
		return exitUsage
	}
	switch *src {
	case infer.StarterStdin, infer.StarterKafka, infer.StarterHTTP:
	default:
		fmt.Fprintf(stderr, "pushd init: --source must be stdin, kafka or http, got %q\n", *src)
		return exitUsage
	}
	res, err := infer.Infer(stdin, infer.Options{Sample: *sample})
	if err != nil {
		fmt.Fprintf(stderr, "pushd init: %v\n", err)
		return exitFailed
	}
	var buf bytes.Buffer
	if err := res.WriteStarter(&buf, infer.StarterOptions{Source: *src, Table: *table, Input: "standard input", File: *out}); err != nil {
		fmt.Fprintf(stderr, "pushd init: %v\n", err)
		return exitFailed
	}
	if *out == "" {
		if _, err := stdout.Write(buf.Bytes()); err != nil {
			fmt.Fprintf(stderr, "pushd init: writing: %v\n", err)
			return exitFailed
		}
		return exitOK
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		fmt.Fprintf(stderr, "pushd init: %s exists; choose another -o or remove it\n", *out)
		return exitFailed
	}
	if err == nil {
		_, err = f.Write(buf.Bytes())
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "pushd init: %v\n", err)
		return exitFailed
	}
	fmt.Fprintf(stderr, "pushd init: wrote %s (%d columns from %d events); next: pushd validate -c %s\n", *out, len(res.Columns), res.Events, *out)
	return exitOK
}
