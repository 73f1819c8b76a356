package main

import (
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/daemon"
	"github.com/pushd/pushd/internal/pipeline"
)

// TestSummarySaysComeAgainOnlyForKafka: undelivered events come again on
// the next run only from Kafka (uncommitted offsets); the summary must not
// promise it for stdin (the lines are named in the error) or HTTP (the
// callers were answered 503).
func TestSummarySaysComeAgainOnlyForKafka(t *testing.T) {
	for _, tt := range []struct {
		source, want string
	}{
		{"kafka", "not committed: they come again on the next run"},
		{"stdin", "their lines are named below"},
		{"http", "their callers were answered 503"},
	} {
		var out strings.Builder
		printSummary(&out, daemon.Result{Pipelines: []daemon.PipelineResult{{
			Name: "p", Source: tt.source, Summary: pipeline.Summary{EventsRead: 3, EventsFailed: 2},
		}}})
		if !strings.Contains(out.String(), "2 events NOT delivered ("+tt.want) {
			t.Errorf("%s: summary %q does not say %q", tt.source, out.String(), tt.want)
		}
		if tt.source != "kafka" && strings.Contains(out.String(), "come again") {
			t.Errorf("%s: summary %q promises the events come again", tt.source, out.String())
		}
	}
}
