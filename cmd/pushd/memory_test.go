package main

import (
	"fmt"
	"testing"

	"github.com/pushd/pushd/internal/config"
)

// TestSoftMemoryLimitCountsEventsNotTargets: the soft memory limit is the
// base plus a share per unacked event, whatever the targets. An eventstream
// target holds no more than a copy of the rows it is writing (kafka-go puts
// a request's pages back once written), so it must not raise the limit: the
// limit sets the heap goal, and with it the peak RSS.
func TestSoftMemoryLimitCountsEventsNotTargets(t *testing.T) {
	const pipeline = `  - name: %s
    source: {type: %s}
    max_unacked_events: %d
    schema:
      columns: [{name: DeviceId, type: String, from: device}]
`
	const fabric = `    targets:
      - type: fabric_eventstream
        name: fabric
        fabric_eventstream:
          auth: {connection_string: "Endpoint=sb://example.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=s=;EntityPath=es_x"}
          batch: {max_rows: 1000, max_bytes: 1048576}
          max_in_flight: 8
`
	for _, tc := range []struct {
		name string
		text string
		want int64
	}{
		{"one eventstream target", "pipelines:\n" + fmt.Sprintf(pipeline, "a", "stdin", 5000) + fabric, 16<<20 + 5000*2<<10},
		{"two pipelines with eventstream targets", "pipelines:\n" + fmt.Sprintf(pipeline, "a", "stdin", 5000) + fabric + fmt.Sprintf(pipeline, "b", "http", 1000) + fabric, 16<<20 + 6000*2<<10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tc.text), "memory.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if got := softMemoryLimit(cfg); got != tc.want {
				t.Errorf("soft memory limit %d bytes, want %d (16 MiB + 2 KiB per unacked event)", got, tc.want)
			}
		})
	}
}
