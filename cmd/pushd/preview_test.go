package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// previewConfig is a config with two pipelines, so --pipeline matters.
const previewConfig = `
powerbi:
  auth: {method: static_token, token: t}
pipelines:
  - name: first
    source: {type: stdin}
    target: {workspace_id: 11111111-1111-1111-1111-111111111111, dataset_id: 22222222-2222-2222-2222-222222222222, table: T}
    schema:
      columns:
        - {name: Id,   type: Int64,    from: id,   required: true}
        - {name: When, type: DateTime, from: ts,   required: true}
        - {name: Temp, type: Double,   from: m.t}
  - name: second
    source: {type: http, http: {listen: "127.0.0.1:0"}}
    target: {workspace_id: 11111111-1111-1111-1111-111111111111, dataset_id: 22222222-2222-2222-2222-222222222222, table: U}
    schema:
      columns:
        - {name: Name, type: String, from: name}
`

func writePreviewConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pushd.yaml")
	if err := os.WriteFile(path, []byte(previewConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSchemaPreview: each event's rows, or every failing column of a
// failed object (a run's dead letter names only the first).
func TestSchemaPreview(t *testing.T) {
	path := writePreviewConfig(t)
	input := strings.Join([]string{
		`{"id":1,"ts":"2026-01-02T03:04:05Z","m":{"t":21.5}}`,
		`{"id":"x","ts":"yesterday","m":{"t":true}}`,
		`[{"id":2,"ts":"2026-01-02T03:04:05Z"},{"ts":"2026-01-02T03:04:05Z"}]`,
		`not json`,
	}, "\n") + "\n"
	var stdout, stderr bytes.Buffer
	code := dispatch([]string{"schema", "preview", "-c", path, "--pipeline", "first"}, strings.NewReader(input), &stdout, &stderr)
	if code != exitFailed {
		t.Errorf("exit %d, want %d (some events would be dead-lettered); stderr:\n%s", code, exitFailed, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		`stdin:1  row  {"Id":1,"When":"2026-01-02T03:04:05.000Z","Temp":21.5}`,
		`stdin:2  dead letter  object 0: column "Id" (from "id"): type:`,
		`stdin:2  dead letter  object 0: column "When" (from "ts"): type:`,
		`stdin:2  dead letter  object 0: column "Temp" (from "m.t"): type:`,
		`stdin:3  row  {"Id":2,"When":"2026-01-02T03:04:05.000Z","Temp":null}`,
		`stdin:3  dead letter  object 1: column "Id" (from "id"): required:`,
		`stdin:4  dead letter  event: syntax:`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if want := "4 events became 2 rows; 3 events would go to the dead letter, whole or in part"; !strings.Contains(stderr.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, stderr.String())
	}
}

// TestSchemaPreviewJSON: --json gives one object per event, with reasons
// named like the dead letter's.
func TestSchemaPreviewJSON(t *testing.T) {
	path := writePreviewConfig(t)
	input := `{"name":"a"}` + "\n" + `{"name":{"x":1}}` + "\n"
	var stdout, stderr bytes.Buffer
	code := dispatch([]string{"schema", "preview", "-c", path, "--pipeline", "second", "--json"}, strings.NewReader(input), &stdout, &stderr)
	if code != exitFailed {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitFailed, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), stdout.String())
	}
	var first, second previewLine
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if first.Position != "stdin:1" || len(first.Rows) != 1 || string(first.Rows[0]) != `{"Name":"a"}` || len(first.DeadLetter) != 0 {
		t.Errorf("first = %+v", first)
	}
	if len(second.Rows) != 0 || len(second.DeadLetter) != 1 || second.DeadLetter[0].Field != "Name" || second.DeadLetter[0].Rule != "type" || second.DeadLetter[0].Kind != "mapping" {
		t.Errorf("second = %+v", second)
	}
}

// TestSchemaPreviewChoosesPipeline: a config with several pipelines needs
// --pipeline, and a wrong name lists the right ones; all good input exits 0.
func TestSchemaPreviewChoosesPipeline(t *testing.T) {
	path := writePreviewConfig(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"several pipelines", nil, exitUsage, "the config has 2 pipelines (first, second): choose one with --pipeline"},
		{"unknown pipeline", []string{"--pipeline", "third"}, exitUsage, `no pipeline "third" in the config (it has: first, second)`},
		{"all good", []string{"--pipeline", "second"}, exitOK, "1 events became 1 rows; 0 events would go"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"schema", "preview", "-c", path}, tc.args...)
			code := dispatch(args, strings.NewReader(`{"name":"a"}`+"\n"), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr.String())
			}
		})
	}
}
