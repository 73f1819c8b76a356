package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeadLetterReasonsSayWhy: each dead-letter line of a run says why,
// with every field that applies: the column and rule of a mapping failure,
// the rule of an event that is not JSON, and Power BI's status and error
// code for a row it refused. A reason with a field blanked fails here.
func TestDeadLetterReasonsSayWhy(t *testing.T) {
	emu, ca := testEmulator(t, nil)
	createTelemetryDataset(t, emu, "Int64")
	dl := filepath.Join(t.TempDir(), "dl.ndjson")
	// pushd maps Timestamp as a String while the table holds a DateTime: a
	// ts that is no date passes pushd and Power BI refuses the row.
	text := powerbiSection(emu, ca) + stdinPipeline("    batch: {max_rows: 100, linger: 20ms}", dl)
	text = strings.Replace(text, "{name: Timestamp,   type: DateTime, from: ts, required: true}", "{name: Timestamp, type: String, from: ts, required: true}", 1)
	cfg := loadConfig(t, text)

	lines := bytes.Split(bytes.TrimSpace(sampleEvents(t, 4)), []byte("\n"))
	notADate := bytes.Replace(lines[1], []byte(`"ts":"`), []byte(`"ts":"notadate`), 1)
	badSeq := bytes.Replace(lines[2], []byte(`"seq":3`), []byte(`"seq":"three"`), 1)
	if bytes.Equal(notADate, lines[1]) || bytes.Equal(badSeq, lines[2]) {
		t.Fatalf("sample events changed shape: %s / %s", lines[1], lines[2])
	}
	input := bytes.Join([][]byte{lines[0], notADate, badSeq, []byte(`{"truncated":`), lines[3]}, []byte("\n"))
	if _, err := Run(context.Background(), Options{Config: cfg, Stdin: bytes.NewReader(append(input, '\n'))}); err != nil {
		t.Fatalf("Run: %v", err)
	}

	data, err := os.ReadFile(dl)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]any{}
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var e struct {
			Position string
			Reason   map[string]any
		}
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("dead letter line %s: %v", line, err)
		}
		got[e.Position] = e.Reason
	}
	want := map[string]map[string]any{
		"stdin:2": {"kind": "rejected", "rule": "rejected", "status": 400.0, "code": "BadRequest"},
		"stdin:3": {"kind": "mapping", "field": "Seq", "rule": "type"},
		"stdin:4": {"kind": "mapping", "rule": "syntax"},
	}
	if len(got) != len(want) {
		t.Errorf("dead letter has entries for %v, want %v", keys(got), keys(want))
	}
	for pos, w := range want {
		r, ok := got[pos]
		if !ok {
			t.Errorf("no dead letter for %s", pos)
			continue
		}
		for k, v := range w {
			if r[k] != v {
				t.Errorf("%s: reason %s = %v, want %v (reason %v)", pos, k, r[k], v, r)
			}
		}
		if m, _ := r["message"].(string); m == "" {
			t.Errorf("%s: reason has no message: %v", pos, r)
		}
		for _, k := range []string{"field", "status", "code"} {
			if _, has := r[k]; has && w[k] == nil {
				t.Errorf("%s: reason has %s = %v, which does not apply", pos, k, r[k])
			}
		}
	}
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
