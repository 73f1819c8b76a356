package schema_test

import (
	"encoding/json"
	"testing"

	"github.com/pushd/pushd/internal/schema"
	"github.com/pushd/pushd/internal/schema/schematest"
)

// telemetryMapper is the mapper of the sample telemetry config and its
// events, with the mean event size set as b's bytes per operation.
func telemetryMapper(b *testing.B) (*schema.Mapper, [][]byte) {
	b.Helper()
	cfg, err := schematest.TelemetryConfig()
	if err != nil {
		b.Fatal(err)
	}
	m, err := schema.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	events := schematest.TelemetryEvents()
	var bytesIn int64
	for _, e := range events {
		bytesIn += int64(len(e))
	}
	b.SetBytes(bytesIn / int64(len(events)))
	return m, events
}

// BenchmarkMap maps the sample telemetry events, one event (one row) per
// iteration, keeping rows in a batch of up to 10,000 as the batcher would.
func BenchmarkMap(b *testing.B) {
	m, events := telemetryMapper(b)
	rows := make([]json.RawMessage, 0, 10_000)
	var err error
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if len(rows) == cap(rows) {
			rows = rows[:0]
		}
		rows, err = m.Map(events[i%len(events)], nil, rows)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkMapInto is BenchmarkMap writing each event's rows into one
// reused arena, as the pipeline does for an aggregation.
func BenchmarkMapInto(b *testing.B) {
	m, events := telemetryMapper(b)
	arena := new([]byte)
	var rows []json.RawMessage
	var err error
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		rows, err = m.MapInto(events[i%len(events)], nil, rows[:0], arena)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
