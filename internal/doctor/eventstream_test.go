package doctor_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/internal/doctor"
	"github.com/pushd/pushd/internal/eventstream/eventstreamtest"
)

// TestDoctorEventstream: doctor connects to a fabric_eventstream target,
// authenticates and finds its topic; a wrong connection string and a
// missing topic fail with the fix; a config without a Power BI target skips
// the Power BI checks.
func TestDoctorEventstream(t *testing.T) {
	e, err := eventstreamtest.Start(t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	write := func(name, connString, topic string) string {
		path := filepath.Join(t.TempDir(), name+".yaml")
		text := fmt.Sprintf(`metrics: {enabled: false}
pipelines:
  - name: p
    source: {type: stdin}
    schema: {columns: [{name: v, type: String}]}
    targets:
      - type: fabric_eventstream
        fabric_eventstream:
          bootstrap_server: %s
          topic: %s
          auth: {connection_string: %q}
          tls: {ca_file: %s}
`, e.Addr, topic, connString, e.CAFile)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tests := []struct {
		name, connString, topic string
		status                  doctor.Status
		detail, fix             string
	}{
		{"reachable", e.ConnectionString, eventstreamtest.Topic, doctor.Pass, "as $ConnectionString; topic es_pushd_test (2 partitions)", ""},
		{"wrong key", strings.Replace(e.ConnectionString, "SharedAccessKey=", "SharedAccessKey=x", 1), eventstreamtest.Topic, doctor.Fail,
			"authentication failed", "copy the connection string again"},
		// Last: it deletes the topic.
		{"missing topic", e.ConnectionString, eventstreamtest.Topic, doctor.Fail, `topic "es_pushd_test" not found`, "pipelines[0].targets[0].fabric_eventstream.topic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "missing topic" {
				if err := e.DeleteTopic(context.Background()); err != nil {
					t.Fatal(err)
				}
			}
			rep := doctor.Run(context.Background(), doctor.Options{Path: write(tt.name, tt.connString, tt.topic), StepTimeout: 10 * time.Second})
			var found bool
			for _, c := range rep.Checks {
				switch c.Step {
				case "power bi":
					if c.Status != doctor.Skip {
						t.Errorf("power bi check %v, want skipped without a Power BI target", c.Status)
					}
				case "eventstream (p/fabric_eventstream)":
					found = true
					if c.Status != tt.status || !strings.Contains(c.Detail, tt.detail) || !strings.Contains(c.Fix, tt.fix) {
						t.Errorf("check = %v %q fix %q; want %v with %q and fix %q", c.Status, c.Detail, c.Fix, tt.status, tt.detail, tt.fix)
					}
				}
			}
			if !found {
				t.Fatalf("no eventstream check in %+v", rep.Checks)
			}
		})
	}
}
