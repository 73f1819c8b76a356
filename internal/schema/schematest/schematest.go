// Package schematest holds sample IoT telemetry events and the schema that
// maps them, shared by the schema, batcher and pipeline tests and benchmarks
// so that they all measure the same shape.
package schematest

import (
	"bytes"
	_ "embed"
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/pushd/pushd/internal/schema"
)

// TelemetryNDJSON is 300 telemetry events, one JSON object a line: device
// {id, site, firmware}, ts (RFC 3339, or epoch milliseconds as a number or a
// string), seq, metrics {temperature_c, humidity_pct, pressure_hpa,
// battery_v (a numeric string)}, status {online (bool, "true"/"FALSE" or
// 0/1), alarms (array of strings, mostly empty)}, location {lat, lon}.
//
//go:embed telemetry.ndjson
var TelemetryNDJSON []byte

// TelemetryYAML is the schema section (schema.Config) for TelemetryNDJSON.
//
//go:embed telemetry.yaml
var TelemetryYAML []byte

// TelemetryEvents returns the sample events, one slice per line, each a
// fresh copy the caller may keep or modify.
func TelemetryEvents() [][]byte {
	lines := bytes.Split(bytes.TrimSpace(TelemetryNDJSON), []byte("\n"))
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[i] = bytes.Clone(l)
	}
	return out
}

// TelemetryConfig returns the schema for the sample events, decoded strictly
// from TelemetryYAML.
func TelemetryConfig() (schema.Config, error) {
	c := schema.DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(TelemetryYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return schema.Config{}, fmt.Errorf("decoding schematest/telemetry.yaml: %w", err)
	}
	return c, nil
}
