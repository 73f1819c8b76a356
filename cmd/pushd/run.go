package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/daemon"
	"github.com/pushd/pushd/internal/source"
)

// runRun is `pushd run`: the daemon's main job.
func runRun(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pushd run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file (YAML; required)")
	logLevel := fs.String("log-level", "", "override log.level: debug, info, warn or error")
	logFormat := fs.String("log-format", "", "override log.format: text or json")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pushd run -c FILE [-log-level L] [-log-format F]")
		fmt.Fprintln(stderr, "\nRuns the pipelines of the config until their input ends (stdin) or SIGTERM/SIGINT,")
		fmt.Fprintln(stderr, "then drains: stops reading, flushes, sends, commits, and exits within shutdown_timeout.")
		fmt.Fprintln(stderr, "Prints a summary on exit. Exit codes: 0 done, 1 failed, 2 bad flags or config.")
		fmt.Fprintln(stderr, "SIGHUP reads the config file again and restarts only the pipelines that changed;")
		fmt.Fprintln(stderr, "an invalid file, or a change that needs a restart, is refused and changes nothing.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	cfg, code, done := parseConfigCommand(fs, args, path, stderr, "pushd: ")
	if done {
		return code
	}
	// The flags override the file, on a reload too.
	override := func(c *config.Config) {
		if *logLevel != "" {
			c.Log.Level = *logLevel
		}
		if *logFormat != "" {
			c.Log.Format = *logFormat
		}
	}
	override(cfg)
	// On a terminal, a stdin run shows a live status line instead of
	// progress log lines; the logs then pass above it.
	var status *termStatus
	logOut := stderr
	if readsStdin(cfg) && isTerminal(stderr) && cfg.Log.ProgressInterval > 0 {
		status = &termStatus{w: stderr}
		logOut = status
	}
	logger, err := newLogger(cfg.Log, logOut)
	if err != nil {
		fmt.Fprintf(stderr, "pushd: %v\n", err)
		return exitUsage
	}

	if limit, set := memoryLimit(cfg); set {
		logger.Debug("soft memory limit set from max_unacked_events", "bytes", limit)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := daemon.Options{Config: cfg, Stdin: stdin, Logger: logger}
	if status != nil {
		opts.StatusLine = status
	}
	var running atomic.Pointer[daemon.Daemon]
	ready := make(chan *daemon.Daemon, 1)
	opts.Ready = func(d *daemon.Daemon) {
		running.Store(d)
		ready <- d
	}
	stopSignals := handleSignals(cancel, func() {
		// A second signal: the operator wants out now. Say what was done
		// and what was not, then exit without waiting for the drain.
		res := daemon.Result{}
		if d := running.Load(); d != nil {
			res = d.Snapshot()
		}
		printSummary(stdout, res)
		fmt.Fprintln(stderr, "pushd: second signal: exiting at once; events in flight were not delivered (Kafka: they come again on the next run)")
		exitNow(exitFailed)
	})
	defer stopSignals()
	// SIGHUP reloads the config file (a restart is needed only for what
	// is outside pipelines).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	runDone := make(chan struct{})
	reloadDone := make(chan struct{})
	go func() {
		defer close(reloadDone)
		reloadOnHangup(ctx, runDone, hup, ready, *path, override, logger)
	}()
	res, err := daemon.Run(ctx, opts)
	close(runDone)
	<-reloadDone
	if status != nil {
		status.Done()
	}
	printSummary(stdout, res)
	if err != nil {
		fmt.Fprintf(stderr, "pushd: %v\n", err)
		if hint := runHint(err, *path); hint != "" {
			fmt.Fprintf(stderr, "pushd: %s\n", hint)
		}
		return exitFailed
	}
	return exitOK
}

// exitNow ends the process; tests replace it.
var exitNow = os.Exit

// handleSignals cancels the run at the first SIGTERM or SIGINT (graceful
// shutdown within shutdown_timeout) and calls now at the second (exit at
// once). The returned function stops listening.
func handleSignals(cancel context.CancelFunc, now func()) func() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-done:
			return
		}
		select {
		case <-sigs:
			now()
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}

// reloadOnHangup reloads the config file on each signal from hup once the
// daemon is ready, until runDone is closed.
func reloadOnHangup(ctx context.Context, runDone <-chan struct{}, hup <-chan os.Signal, ready <-chan *daemon.Daemon, path string, override func(*config.Config), log *slog.Logger) {
	var d *daemon.Daemon
	select {
	case d = <-ready:
	case <-runDone:
		return
	}
	reloadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-runDone:
			cancel()
		case <-reloadCtx.Done():
		}
	}()
	for {
		select {
		case <-hup:
			_ = reloadFile(reloadCtx, d, path, override, log)
		case <-runDone:
			return
		}
	}
}

// reloadFile loads the config file and applies it to d. An invalid file is
// refused with the messages of pushd validate, one error line per problem.
func reloadFile(ctx context.Context, d *daemon.Daemon, path string, override func(*config.Config), log *slog.Logger) error {
	log.Info("reloading the config", "path", path)
	cfg, err := config.Load(path)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				log.Error("config reload refused: invalid config", "problem", line)
			}
		}
		return err
	}
	override(cfg)
	return d.Reload(ctx, cfg)
}

// Memory bounds: what pushd holds is bounded by design (events in flight
// up to max_unacked_events, about 1 KiB each with their rows and trackers,
// plus a fixed base), so without a soft limit the garbage collector would
// let the heap grow to twice that before collecting.
//
// A fabric_eventstream target adds nothing of its own: kafka-go encodes
// each produce request into pooled pages and puts them back as soon as the
// request is written, before the broker answers, so what it holds at most
// is one copy of the rows being written, which are rows of unacked events
// and within their share. (The limit once added max_in_flight ×
// batch.max_bytes, as if every request were held whole for its round trip:
// 5 MiB that only raised the heap goal, and the peak RSS with it.)
const (
	memoryBase     = 16 << 20
	memoryPerEvent = 2 << 10
)

// softMemoryLimit is the soft memory limit for cfg: the fixed base plus a
// share per event each pipeline may hold unacked.
func softMemoryLimit(cfg *config.Config) int64 {
	limit := int64(memoryBase)
	for _, p := range cfg.Pipelines {
		limit += int64(p.MaxUnackedEvents) * memoryPerEvent
	}
	return limit
}

// memoryLimit sets Go's soft memory limit from the config's bounds unless
// GOMEMLIMIT is set: the heap is then collected before garbage doubles it,
// which keeps a sidecar's footprint near what it really holds. It is a soft
// limit: if pushd ever needs more, the collector works harder (its CPU
// share is capped by the runtime) but nothing fails.
func memoryLimit(cfg *config.Config) (int64, bool) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return 0, false
	}
	limit := softMemoryLimit(cfg)
	debug.SetMemoryLimit(limit)
	return limit, true
}

// undeliveredHint says what becomes of undelivered events: only Kafka
// redelivers them; stdin's are named by line in the error that follows the
// summary; HTTP callers were told with a 503 naming them.
func undeliveredHint(sourceType string) string {
	switch sourceType {
	case source.TypeKafka:
		return "not committed: they come again on the next run"
	case source.TypeStdin:
		return "their lines are named below: feed them again"
	case source.TypeHTTP:
		return "their callers were answered 503 naming them"
	}
	return "not acknowledged to the source"
}

// printSummary writes what the run did, one block per pipeline.
func printSummary(w io.Writer, res daemon.Result) {
	for _, p := range res.Pipelines {
		s := p.Summary
		fmt.Fprintf(w, "pipeline %s: %d events read, %d rows accepted in %d requests, %d rows and %d events dead-lettered",
			p.Name, s.EventsRead, s.RowsAccepted, s.Requests, s.RowsDeadLettered, s.EventsDeadLettered)
		if s.EventsFailed > 0 {
			fmt.Fprintf(w, ", %d events NOT delivered (%s)", s.EventsFailed, undeliveredHint(p.Source))
		}
		fmt.Fprintln(w)
		if s.RowsDeadLettered+s.EventsDeadLettered > 0 {
			fmt.Fprintf(w, "  dead letter: %s\n", p.DeadLetter)
		}
		if s.ShutdownTimedOut {
			fmt.Fprintln(w, "  shutdown timeout passed: sends were cancelled")
		}
	}
	if len(res.Pipelines) > 0 {
		fmt.Fprintf(w, "power bi: %d retries, %d throttled (429) answers\n", res.Retries, res.Throttled)
	}
	for _, l := range res.Landed {
		fmt.Fprintf(w, "emulator: table %q of dataset %q (%s) holds %d rows\n", l.Table, l.Dataset, l.DatasetID, l.Rows)
	}
}

// newLogger builds the process logger from the log section.
func newLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level %q: want debug, info, warn or error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.Format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.format %q: want text or json", c.Format)
}

// runValidate is `pushd validate`: load and check a config.
func runValidate(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pushd validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file (YAML; required)")
	print := fs.Bool("print", false, "print the config with defaults applied and secrets redacted")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pushd validate -c FILE [-print]")
		fmt.Fprintln(stderr, "\nChecks a config without connecting anywhere: exit 0 when valid, else every problem")
		fmt.Fprintln(stderr, "(file:line: key: message) and exit 2.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	cfg, code, done := parseConfigCommand(fs, args, path, stderr, "")
	if done {
		return code
	}
	if *print {
		out, err := cfg.Redacted()
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailed
		}
		_, _ = stdout.Write(out)
		return exitOK
	}
	fmt.Fprintf(stdout, "%s: valid (%d pipelines)\n", *path, len(cfg.Pipelines))
	explainShares(stdout, cfg)
	return exitOK
}

// readsStdin tells whether a pipeline of cfg reads standard input.
func readsStdin(cfg *config.Config) bool {
	for _, p := range cfg.Pipelines {
		if p.Source.Type == "stdin" {
			return true
		}
	}
	return false
}
