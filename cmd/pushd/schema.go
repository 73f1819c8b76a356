package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/pushd/pushd/internal/infer"
)

// runSchema is `pushd schema`: schema helpers (infer, preview).
func runSchema(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "preview" {
		return runSchemaPreview(args[1:], stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("pushd schema infer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	table := fs.String("table", "", "name of the target table, noted in the output's header")
	sample := fs.Int("sample", infer.DefaultSample, "read at most N events (0: all)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pushd schema infer [--table NAME] [--sample N] < sample.ndjson")
		fmt.Fprintln(stderr, "       pushd schema preview -c FILE [--pipeline NAME] [--json] < events.ndjson")
		fmt.Fprintln(stderr, "         (see pushd schema preview --help)")
		fmt.Fprintln(stderr, "\nReads events (NDJSON objects or arrays of objects) from standard input and prints a")
		fmt.Fprintln(stderr, "`schema:` section for a pipeline: nested fields flattened to dotted paths, an array's")
		fmt.Fprintln(stderr, "first element as path.0, types inferred (Int64, Double, Boolean, DateTime for RFC 3339")
		fmt.Fprintln(stderr, "strings, String), required: true for fields in every event. Every sampled event is")
		fmt.Fprintln(stderr, "mapped with the result before it is printed.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nExit codes: 0 done, 1 the input could not be read or inferred, 2 bad flags.")
	}
	if len(args) == 0 || args[0] != "infer" {
		fs.Usage()
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return exitOK
		}
		return exitUsage
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 || *sample < 0 {
		fs.Usage()
		return exitUsage
	}
	res, err := infer.Infer(stdin, infer.Options{Sample: *sample})
	if err != nil {
		fmt.Fprintf(stderr, "pushd schema infer: %v\n", err)
		return exitFailed
	}
	if err := res.WriteYAML(stdout, infer.YAMLOptions{Table: *table, Input: "standard input"}); err != nil {
		fmt.Fprintf(stderr, "pushd schema infer: writing: %v\n", err)
		return exitFailed
	}
	return exitOK
}
