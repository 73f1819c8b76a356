package infer

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/pushd/pushd/internal/schema"
)

// YAMLOptions change what WriteYAML prints around the section.
type YAMLOptions struct {
	// Table, when set, is named in the header as the target table.
	Table string
	// Input names where the events came from, for the header.
	Input string
	// InPlace leaves out the advice to paste the section into a pipeline
	// (the section is written inside one, by WriteStarter).
	InPlace bool
}

// WriteYAML writes the schema as a `schema:` section of a pipeline, one
// flow mapping per column, after a comment header saying how it was made
// and what was left out. Pasted under a pipeline (indented to the level of
// its target key), it validates.
func (r *Result) WriteYAML(w io.Writer, opts YAMLOptions) error {
	bw := bufio.NewWriter(w)
	from := ""
	if opts.Input != "" {
		from = " of " + opts.Input
	}
	fmt.Fprintf(bw, "# Inferred by `pushd schema infer` from %d events (%d objects)%s.\n", r.Events, r.Objects, from)
	if opts.InPlace {
		fmt.Fprintln(bw, "# Check each name and type. Nested fields are dotted paths; an array")
	} else {
		fmt.Fprintln(bw, "# Check each name and type, then paste this section into a pipeline, indented")
		fmt.Fprintln(bw, "# to the level of its target key. Nested fields are dotted paths; an array")
	}
	fmt.Fprintln(bw, "# gives its first element only (path.0). required: true marks fields present")
	fmt.Fprintln(bw, "# in every sampled object: an event without one goes to the dead letter.")
	if opts.Table != "" {
		fmt.Fprintf(bw, "# For the table %s (target.table: %s).\n", opts.Table, scalar(opts.Table))
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintln(bw, "# Left out:")
		for _, s := range r.Skipped {
			fmt.Fprintf(bw, "#   %s\n", oneLine(s))
		}
	}
	fmt.Fprintln(bw, "schema:")
	if r.StringOverflow != "" {
		fmt.Fprintf(bw, "  string_overflow: %s   # some sampled strings are longer than %d characters\n", r.StringOverflow, schema.MaxStringLength)
	}
	fmt.Fprintln(bw, "  columns:")
	// Align the mappings so that the columns read as a table.
	names := make([]string, len(r.Columns))
	types := make([]string, len(r.Columns))
	froms := make([]string, len(r.Columns))
	var wn, wt, wf int
	for i, c := range r.Columns {
		names[i] = scalar(c.Name) + ","
		types[i] = c.Type + ","
		froms[i] = scalar(c.From)
		wn, wt, wf = max(wn, len(names[i])), max(wt, len(types[i])), max(wf, len(froms[i]))
	}
	for i, c := range r.Columns {
		line := fmt.Sprintf("    - {name: %-*s type: %-*s from: %s", wn, names[i], wt, types[i], froms[i])
		if c.Required {
			line += fmt.Sprintf(",%s required: true", strings.Repeat(" ", wf-len(froms[i])))
		}
		line += "}"
		if c.Note != "" {
			line += "   # " + oneLine(c.Note)
		}
		fmt.Fprintln(bw, strings.TrimRight(line, " "))
	}
	return bw.Flush()
}

// plainSafe matches text that YAML reads back as the same string in a flow
// mapping without quotes.
var plainSafe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.\-]*$`)

// scalar writes s as a YAML scalar: plain when safe, else double-quoted
// (JSON's escapes are valid YAML).
func scalar(s string) string {
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~":
	default:
		if plainSafe.MatchString(s) {
			return s
		}
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}
