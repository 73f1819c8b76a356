// Command pushd streams events from Kafka, stdin or HTTP into Power BI push
// datasets.
package main

import (
	"errors"
	"flag"
	"fmt"
	"github.com/pushd/pushd/internal/config"
	"io"
	"os"
	"sort"
)

// command is one subcommand. run gets the arguments after its name and
// returns the process exit code.
type command struct {
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

// commands lists the subcommands; each lives in its own file of this package.
var commands = map[string]command{
	"emulate":  {summary: "serve a local Power BI push API and Entra ID token endpoint (tests, demos, benchmarks)", run: runEmulate},
	"version":  {summary: "print the version", run: runVersion},
	"run":      {summary: "run the pipelines of a config (the daemon's main job)", run: runRun},
	"validate": {summary: "check a config and report every problem with its line", run: runValidate},
	"sample":   {summary: "write synthetic IoT telemetry events as NDJSON (demo and benchmark input)", run: runSample},

	// Operations: set up, check and derive configs (README, "Setting up datasets" and after).
	"provision": {summary: "create the datasets and columns a config describes (--dry-run shows them)", run: runProvision},
	"doctor":    {summary: "check config, token, workspace, datasets, tables and sources; print a fix for each failure", run: runDoctor},
	"replay":    {summary: "send the events of a dead-letter file again through a pipeline (after a fix)", run: runReplay},
	"init":      {summary: "write a commented starter config, with a schema inferred from sample events", run: runInit},
	"schema":    {summary: "schema infer: a schema section from sample events; schema preview: the rows events become", run: runSchema},
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // the run failed (could not deliver, shutdown deadline passed)
	exitUsage  = 2 // bad flags or an invalid config
)

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func dispatch(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "pushd: unknown command %q\n\n", args[0])
		usage(stderr)
		return exitUsage
	}
	return cmd.run(args[1:], stdin, stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "pushd streams events into Power BI push datasets.")
	fmt.Fprintln(w, "\nUsage: pushd <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'pushd <command> --help' for a command's flags.")
}

// parseFlags parses a command's arguments. done says the command must
// return code now: 0 after --help (the flag package printed the usage), 2
// after a bad flag (it printed the problem and the usage).
func parseFlags(fs *flag.FlagSet, args []string) (code int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, true
		}
		return exitUsage, true
	}
	return exitOK, false
}

// parseConfigCommand parses the flags of a command that takes -c FILE and
// no arguments, and loads the config. done says the command must return
// code now (help, a bad flag, no -c, or an invalid config, which is printed
// after prefix).
func parseConfigCommand(fs *flag.FlagSet, args []string, path *string, stderr io.Writer, prefix string) (cfg *config.Config, code int, done bool) {
	if code, done := parseFlags(fs, args); done {
		return nil, code, true
	}
	if *path == "" || fs.NArg() > 0 {
		fs.Usage()
		return nil, exitUsage, true
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "%s%v\n", prefix, err)
		return nil, exitUsage, true
	}
	return cfg, exitOK, false
}
