package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/pushd/pushd/internal/sample"
)

// runSample writes synthetic IoT telemetry as NDJSON, the shape that
// configs/quickstart.yaml maps: demo data and benchmark input.
func runSample(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pushd sample", flag.ContinueOnError)
	fs.SetOutput(stderr)
	count := fs.Int("n", 1000, "number of events to write")
	devices := fs.Int("devices", 50, "number of distinct devices")
	seed := fs.Uint64("seed", 1, "random seed (same seed, same events)")
	start := fs.String("start", "2026-11-28T00:00:00Z", "timestamp of the first event (RFC 3339)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pushd sample [-n N] [-devices D] [-seed S] [-start TIME]")
		fmt.Fprintln(stderr, "\nWrites N synthetic IoT telemetry events as NDJSON to stdout.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	t0, err := time.Parse(time.RFC3339, *start)
	if err != nil || *count < 0 || *devices < 1 {
		fmt.Fprintln(stderr, "pushd sample: -start must be RFC 3339, -n >= 0, -devices >= 1")
		return exitUsage
	}
	w := bufio.NewWriterSize(stdout, 64<<10)
	err = sample.Write(w, *count, *devices, *seed, t0)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		fmt.Fprintf(stderr, "pushd sample: writing events: %v\n", err)
		return exitFailed
	}
	return exitOK
}
