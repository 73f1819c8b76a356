package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"

	"github.com/pushd/pushd/internal/doctor"
)

// runDoctor is `pushd doctor`: check every step a deployment fails at.
func runDoctor(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pushd doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file (YAML; required)")
	timeout := fs.Duration("timeout", doctor.DefaultStepTimeout, "longest wait for each network check")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pushd doctor -c FILE [-timeout D]")
		fmt.Fprintln(stderr, "\nChecks in order: the config; a token from Entra ID; access to each workspace; each")
		fmt.Fprintln(stderr, "target dataset exists and accepts rows; its table and columns match the schema; each")
		fmt.Fprintln(stderr, "source (Kafka brokers and topics, HTTP listen address). Prints PASS, FAIL (with the fix)")
		fmt.Fprintln(stderr, "or SKIP per step. Reads only: posts no rows, changes nothing.")
		fmt.Fprintln(stderr, "Exit codes: 0 every check passed, 1 a check failed, 2 bad flags.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *path == "" || fs.NArg() > 0 || *timeout <= 0 {
		fs.Usage()
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	rep := doctor.Run(ctx, doctor.Options{Path: *path, StepTimeout: *timeout, Report: func(c doctor.Check) { printCheck(stdout, c) }})
	failed := 0
	for _, c := range rep.Checks {
		if c.Status == doctor.Fail {
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(stdout, "\n%d check(s) failed: apply each fix above, then run pushd doctor again\n", failed)
		return exitFailed
	}
	fmt.Fprintln(stdout, "\nall checks passed")
	return exitOK
}

// printCheck writes one check: status and step, the detail indented below
// when it spans lines, and the fix.
func printCheck(w io.Writer, c doctor.Check) {
	detail := strings.ReplaceAll(strings.TrimSpace(c.Detail), "\n", "\n        ")
	fmt.Fprintf(w, "%-4s  %-22s %s\n", c.Status, c.Step, detail)
	if c.Fix != "" {
		fmt.Fprintf(w, "      fix: %s\n", c.Fix)
	}
}
