package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/source"
)

// runSchemaPreview is `pushd schema preview`: it maps events from standard
// input with a pipeline's schema and prints, for each, the rows it becomes
// or every reason it would go to the dead letter. Nothing is sent.
func runSchemaPreview(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pushd schema preview", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "config file (required)")
	name := fs.String("pipeline", "", "the pipeline whose schema maps the events (required when the config has several)")
	asJSON := fs.Bool("json", false, "print one JSON object per event instead of text")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: pushd schema preview -c FILE [--pipeline NAME] [--json] < events.ndjson")
		fmt.Fprintln(stderr, "\nMaps each event of standard input (NDJSON, framed exactly as `pushd run` frames stdin)")
		fmt.Fprintln(stderr, "with the pipeline's schema and prints the JSON row(s) it becomes, or why it would go to")
		fmt.Fprintln(stderr, "the dead letter, naming every failing column (a run's dead letter names the first).")
		fmt.Fprintln(stderr, "Nothing is sent and no token is asked for. Metadata columns (kafka.*) are null here.")
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nExit codes: 0 every event maps, 1 some would go to the dead letter (or input could")
		fmt.Fprintln(stderr, "not be read), 2 bad flags or an invalid config.")
	}
	cfg, code, done := parseConfigCommand(fs, args, path, stderr, "pushd schema preview: ")
	if done {
		return code
	}
	p, err := choosePipeline(cfg, *name)
	if err != nil {
		fmt.Fprintf(stderr, "pushd schema preview: %v\n", err)
		return exitUsage
	}
	m, err := schema.New(p.Schema)
	if err != nil { // unreachable after config validation
		fmt.Fprintf(stderr, "pushd schema preview: pipeline %s: %v\n", p.Name, err)
		return exitUsage
	}
	pv := previewer{mapper: m, out: stdout, json: *asJSON}
	src := source.NewStdin(stdin, p.Source.Stdin.MaxLineBytes, "stdin")
	defer src.Close(context.Background())
	for {
		ev, ack, err := src.Read(context.Background())
		if errors.Is(err, source.ErrEndOfInput) {
			break
		}
		if err != nil {
			fmt.Fprintf(stderr, "pushd schema preview: reading standard input: %v\n", err)
			return exitFailed
		}
		if err := pv.event(ev); err != nil {
			fmt.Fprintf(stderr, "pushd schema preview: writing: %v\n", err)
			return exitFailed
		}
		ack(nil)
	}
	fmt.Fprintf(stderr, "pushd schema preview: pipeline %s: %d events became %d rows; %d events would go to the dead letter, whole or in part\n",
		p.Name, pv.events, pv.rows, pv.failed)
	if pv.failed > 0 {
		return exitFailed
	}
	return exitOK
}

// choosePipeline returns the pipeline called name, or the only one when
// name is empty.
func choosePipeline(cfg *config.Config, name string) (*config.Pipeline, error) {
	names := make([]string, len(cfg.Pipelines))
	for i := range cfg.Pipelines {
		names[i] = cfg.Pipelines[i].Name
		if cfg.Pipelines[i].Name == name {
			return &cfg.Pipelines[i], nil
		}
	}
	switch {
	case name != "":
		return nil, fmt.Errorf("no pipeline %q in the config (it has: %s)", name, strings.Join(names, ", "))
	case len(cfg.Pipelines) == 1:
		return &cfg.Pipelines[0], nil
	}
	return nil, fmt.Errorf("the config has %d pipelines (%s): choose one with --pipeline", len(names), strings.Join(names, ", "))
}

// previewer prints what each event becomes.
type previewer struct {
	mapper               *schema.Mapper
	out                  io.Writer
	json                 bool
	events, failed, rows int
}

// previewFailure is one reason in --json output, named like the dead
// letter's reason fields.
type previewFailure struct {
	Index   int    `json:"index,omitempty"`
	Kind    string `json:"kind"`
	Field   string `json:"field,omitempty"`
	Rule    string `json:"rule,omitempty"`
	Message string `json:"message"`
}

type previewLine struct {
	Position   string            `json:"position"`
	Rows       []json.RawMessage `json:"rows"`
	DeadLetter []previewFailure  `json:"dead_letter,omitempty"`
}

func (pv *previewer) event(ev source.Event) error {
	pv.events++
	line := previewLine{Position: ev.Where(), Rows: []json.RawMessage{}}
	if ev.Err != nil {
		line.DeadLetter = []previewFailure{{Kind: "source", Rule: "source", Message: ev.Err.Error()}}
	} else {
		rows, err := pv.mapper.Preview(ev.Data, nil)
		line.Rows = append(line.Rows, rows...)
		var me *schema.MappingError
		switch {
		case errors.As(err, &me):
			for _, f := range me.Failures {
				line.DeadLetter = append(line.DeadLetter, previewFailure{Index: f.Index, Kind: "mapping", Field: f.Column, Rule: f.Rule, Message: f.String()})
			}
		case err != nil:
			line.DeadLetter = []previewFailure{{Kind: "mapping", Rule: "syntax", Message: err.Error()}}
		}
	}
	pv.rows += len(line.Rows)
	if len(line.DeadLetter) > 0 {
		pv.failed++
	}
	if pv.json {
		b, err := json.Marshal(line)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(pv.out, "%s\n", b)
		return err
	}
	for _, r := range line.Rows {
		if _, err := fmt.Fprintf(pv.out, "%s  row  %s\n", line.Position, r); err != nil {
			return err
		}
	}
	for _, f := range line.DeadLetter {
		if _, err := fmt.Fprintf(pv.out, "%s  dead letter  %s\n", line.Position, f.Message); err != nil {
			return err
		}
	}
	if len(line.Rows) == 0 && len(line.DeadLetter) == 0 {
		_, err := fmt.Fprintf(pv.out, "%s  no rows (an empty array)\n", line.Position)
		return err
	}
	return nil
}
