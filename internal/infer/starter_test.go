package infer_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/infer"
	"github.com/pushd/pushd/internal/schema"
)

// TestWriteStarter: for every source, the starter config loads without a
// single change, reads from that source, names the table, runs on the
// embedded emulator, leaves batch and limits at their defaults, and its
// schema maps every sampled event.
func TestWriteStarter(t *testing.T) {
	sample, err := os.ReadFile("../../configs/sample-events.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	res, err := infer.Infer(bytes.NewReader(sample), infer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defaults := config.DefaultPipeline()
	for _, src := range []string{infer.StarterStdin, infer.StarterKafka, infer.StarterHTTP} {
		t.Run(src, func(t *testing.T) {
			var buf bytes.Buffer
			if err := res.WriteStarter(&buf, infer.StarterOptions{Source: src, Table: "Plant Telemetry", File: "plant.yaml"}); err != nil {
				t.Fatal(err)
			}
			text := buf.String()
			cfg, err := config.Options{LookupEnv: func(string) (string, bool) { return "", false }}.Parse(buf.Bytes(), "starter.yaml")
			if err != nil {
				t.Fatalf("the starter config does not load: %v\n%s", err, text)
			}
			if !cfg.Emulator.Embedded {
				t.Error("the starter does not run on the embedded emulator")
			}
			if len(cfg.Pipelines) != 1 {
				t.Fatalf("%d pipelines, want 1", len(cfg.Pipelines))
			}
			p := cfg.Pipelines[0]
			if p.Name != "plant-telemetry" || p.Source.Type != src || p.Target.Table != "Plant Telemetry" || !p.Provision.Create {
				t.Errorf("pipeline = name %q, source %q, table %q, create %v", p.Name, p.Source.Type, p.Target.Table, p.Provision.Create)
			}
			if p.Batch != defaults.Batch || p.MaxUnackedEvents != defaults.MaxUnackedEvents {
				t.Errorf("batch %+v, max_unacked %d: want the defaults %+v, %d", p.Batch, p.MaxUnackedEvents, defaults.Batch, defaults.MaxUnackedEvents)
			}
			if l := p.Limits.WithDefaults(); l != defaults.Limits.WithDefaults() {
				t.Errorf("limits %+v, want the defaults %+v", l, defaults.Limits.WithDefaults())
			}
			if len(p.Schema.Columns) != len(res.Columns) {
				t.Errorf("%d columns, want the %d inferred", len(p.Schema.Columns), len(res.Columns))
			}
			for _, want := range []string{"./bin/pushd run -c plant.yaml", "# powerbi:", "client_secret: ${PUSHD_CLIENT_SECRET}", "pushd doctor -c plant.yaml"} {
				if !strings.Contains(text, want) {
					t.Errorf("the starter lacks %q", want)
				}
			}
			if strings.Contains(text, "paste this section") {
				t.Error("the schema inside the starter still says to paste it somewhere")
			}
			m, err := schema.New(p.Schema)
			if err != nil {
				t.Fatal(err)
			}
			for i, line := range bytes.Split(bytes.TrimSpace(sample), []byte("\n")) {
				if _, err := m.Map(line, nil, nil); err != nil {
					t.Fatalf("sample line %d does not map: %v", i+1, err)
				}
			}
		})
	}
	var buf bytes.Buffer
	if err := res.WriteStarter(&buf, infer.StarterOptions{Source: "mqtt"}); err == nil || !strings.Contains(err.Error(), `unknown source "mqtt"`) {
		t.Errorf("an unknown source: err = %v", err)
	}
}
