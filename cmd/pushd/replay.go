package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/daemon"
	"github.com/pushd/pushd/internal/replay"
	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/source"
)

// runReplay is `pushd replay`: the events of a dead-letter file, sent again
// through a pipeline's current mapping and limits.
func runReplay(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pushd replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file (required)")
	name := fs.String("pipeline", "", "the pipeline to send through (required when the config has several)")
	out := fs.String("dead-letter", "", "where what is still refused goes (default: beside the input, NAME.replay-TIME.ndjson)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pushd replay -c FILE [--pipeline NAME] [--dead-letter PATH] DEAD_LETTER.ndjson")
		fmt.Fprintln(stderr, "\nSends the events of a dead-letter file again through the pipeline's current schema,")
		fmt.Fprintln(stderr, "batching and limits (after a fix to the schema or the dataset, say). An entry about one")
		fmt.Fprintln(stderr, "object of an array event sends that object alone. The input file is never changed; what")
		fmt.Fprintln(stderr, "is still refused goes to a new dead-letter file. The pipeline's own source is not read.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nExit codes: 0 every entry landed, 1 some went to the new dead letter or were not")
		fmt.Fprintln(stderr, "delivered (or the run failed), 2 bad flags or an invalid config.")
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if *path == "" || fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	input := fs.Arg(0)
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "pushd replay: %v\n", err)
		return exitUsage
	}
	p, err := choosePipeline(cfg, *name)
	if err != nil {
		fmt.Fprintf(stderr, "pushd replay: %v\n", err)
		return exitUsage
	}
	dl := *out
	if dl == "" {
		base := strings.TrimSuffix(input, filepath.Ext(input))
		dl = fmt.Sprintf("%s.replay-%s.ndjson", base, time.Now().UTC().Format("20060102T150405Z"))
	}
	if same(dl, input) {
		fmt.Fprintf(stderr, "pushd replay: --dead-letter %s is the input file; replay never writes to it\n", dl)
		return exitUsage
	}
	mapper, err := schema.New(p.Schema)
	if err != nil {
		fmt.Fprintf(stderr, "pushd replay: pipeline %s: %v\n", p.Name, err)
		return exitUsage
	}
	src, err := replay.Open(input, mapper)
	if err != nil {
		fmt.Fprintf(stderr, "pushd replay: %v\n", err)
		return exitFailed
	}

	// One pipeline, fed from the file; no ops endpoint (a running pushd
	// may hold its address).
	p.DeadLetter.Path = dl
	cfg.Pipelines = cfg.Pipelines[:0:0]
	cfg.Pipelines = append(cfg.Pipelines, *p)
	cfg.Metrics.Enabled = false
	cfg.Log.ProgressInterval = 0
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "pushd replay: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	res, runErr := daemon.Run(ctx, daemon.Options{Config: cfg, Logger: logger, Sources: map[string]source.Source{p.Name: src}})
	printSummary(stdout, res)
	st := src.Stats()
	fmt.Fprintf(stdout, "replay: %d entries of %s: %d landed", st.Entries, input, st.Landed)
	if st.DeadLettered > 0 {
		fmt.Fprintf(stdout, ", %d still refused (in %s, with the reasons)", st.DeadLettered, dl)
	}
	if st.Failed > 0 {
		fmt.Fprintf(stdout, ", %d not delivered (run the replay again; %s is unchanged)", st.Failed, input)
	}
	fmt.Fprintln(stdout)
	if runErr != nil {
		fmt.Fprintf(stderr, "pushd replay: %v\n", runErr)
		return exitFailed
	}
	if st.DeadLettered+st.Failed > 0 {
		return exitFailed
	}
	return exitOK
}

// same tells whether two paths name one file (by their absolute paths).
func same(a, b string) bool {
	x, err1 := filepath.Abs(a)
	y, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && x == y
}
