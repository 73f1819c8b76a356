package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/pushd/pushd/internal/provision"
	"github.com/pushd/pushd/internal/pushapi"
)

// runProvision is `pushd provision`: create the datasets and columns a
// config describes.
func runProvision(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pushd provision", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file (YAML; required)")
	dryRun := fs.Bool("dry-run", false, "print what would change, change nothing")
	dropColumns := fs.Bool("drop-columns", false, "also drop columns Power BI has and the config does not name (their data is lost)")
	replaceUnknown := fs.Bool("replace-unknown-columns", false, "when Power BI lists a table without its columns, set them to the config's (any other column is dropped)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pushd provision -c FILE [--dry-run] [--drop-columns] [--replace-unknown-columns]")
		fmt.Fprintln(stderr, "\nMakes Power BI hold what the config describes: creates each missing dataset (with its")
		fmt.Fprintln(stderr, "tables) for pipelines with provision.create: true, and adds missing columns to existing")
		fmt.Fprintln(stderr, "tables. Never drops a column unless --drop-columns. Running it again does nothing.")
		fmt.Fprintln(stderr, "A table Power BI lists without its columns is left alone unless --replace-unknown-columns.")
		fmt.Fprintf(stderr, "Power BI accepts new push datasets only until %s.\n", provision.CreateDeadline)
		fmt.Fprintln(stderr, "Exit codes: 0 done (or nothing to do), 1 problems left or Power BI failed, 2 bad flags or config.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	cfg, code, done := parseConfigCommand(fs, args, path, stderr, "pushd provision: ")
	if done {
		return code
	}
	if cfg.Emulator.Embedded {
		fmt.Fprintf(stderr, "pushd provision: %s has emulator.embedded: true, so `pushd run` starts its own emulator and creates the datasets itself; there is nothing to provision. To provision a real Power BI (or an emulator started with `pushd emulate`), set emulator.embedded: false and point powerbi at it.\n", *path)
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pb := cfg.PowerBI
	if pb.Retry.MaxElapsed <= 0 {
		// A command must end: retry an outage for a while, not forever.
		pb.Retry.MaxElapsed = provisionMaxElapsed
	}
	client, err := newPowerBIClient(pb, logger)
	if err != nil {
		fmt.Fprintf(stderr, "pushd provision: %v\n", err)
		return exitUsage
	}

	actions, planErr := provision.Plan(ctx, client, cfg, provision.Options{DropColumns: *dropColumns, ReplaceUnknownColumns: *replaceUnknown})
	creates := false
	for _, a := range actions {
		if a.Kind == provision.CreateDataset {
			creates = true
		}
	}
	code = exitOK
	switch {
	case len(actions) == 0 && planErr == nil:
		fmt.Fprintf(stdout, "nothing to do: the datasets, tables and columns of %s exist in Power BI\n", *path)
	case *dryRun:
		for _, a := range actions {
			fmt.Fprintf(stdout, "would %s\n", a)
		}
		if len(actions) > 0 {
			fmt.Fprintln(stdout, "dry run: nothing was changed; run without --dry-run to apply")
		}
	default:
		for _, a := range actions {
			created, err := provision.Apply(ctx, client, []provision.Action{a})
			if err != nil {
				fmt.Fprintf(stdout, "FAILED to %s\n", a)
				fmt.Fprintf(stderr, "pushd provision: %v\n", err)
				code = exitFailed
				break
			}
			if ds, ok := created[a.Dataset.Name]; ok && a.Kind == provision.CreateDataset {
				fmt.Fprintf(stdout, "done: %s (dataset id %s)\n", a, ds.ID)
			} else {
				fmt.Fprintf(stdout, "done: %s\n", a)
			}
		}
	}
	if planErr != nil {
		problems := []error{planErr}
		if j, ok := planErr.(interface{ Unwrap() []error }); ok {
			problems = j.Unwrap()
		}
		for _, p := range problems {
			fmt.Fprintf(stdout, "problem: %v\n", p)
		}
		fmt.Fprintf(stdout, "%d problem(s) left: fix them as each line says, then run pushd provision again\n", len(problems))
		var ae *pushapi.AuthError
		if errors.As(planErr, &ae) {
			fmt.Fprintf(stdout, "hint: no token from Entra ID; `pushd doctor -c %s` explains %s\n", *path, ae.AADSTS)
		}
		code = exitFailed
	}
	if creates {
		fmt.Fprintf(stdout, "note: Power BI accepts new push datasets only until %s; after that, bind pipelines to existing datasets\n", provision.CreateDeadline)
	}
	return code
}

// provisionMaxElapsed bounds the retries of one Power BI request made by
// provision when the config sets no powerbi.retry.max_elapsed.
const provisionMaxElapsed = 2 * time.Minute

// newPowerBIClient builds the Power BI client as `pushd run` does: the HTTP
// client of the powerbi section (its CA file and timeout), the token
// provider of its auth method, and the API client.
func newPowerBIClient(pb pushapi.Config, logger *slog.Logger) (*pushapi.Client, error) {
	httpClient, err := pushapi.NewHTTPClient(pb)
	if err != nil {
		return nil, fmt.Errorf("powerbi: %w", err)
	}
	tokens, err := pushapi.NewTokenProvider(pb, httpClient, logger.With("component", "auth"), nil)
	if err != nil {
		return nil, fmt.Errorf("powerbi.auth: %w", err)
	}
	client, err := pushapi.NewClient(pb, tokens, httpClient, pushapi.ClientOptions{Logger: logger.With("component", "powerbi")})
	if err != nil {
		return nil, fmt.Errorf("powerbi: %w", err)
	}
	return client, nil
}
