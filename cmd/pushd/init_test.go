package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInitCommand: pushd init writes a starter config that validates, maps
// the sample and delivers it on the embedded emulator as written (but for
// the metrics port, moved to a free one); it never overwrites a file.
func TestInitCommand(t *testing.T) {
	sample, err := os.ReadFile("../../configs/sample-events.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "pushd.yaml")
	code, _, stderr := runCmd(t, string(sample), "init", "--source", "stdin", "--table", "Telemetry", "-o", path)
	if code != exitOK {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	mustContain(t, "init's message", stderr, "wrote "+path, "13 columns from 500 events", "pushd validate -c "+path)

	code, _, stderr = runCmd(t, string(sample), "init", "--source", "stdin", "-o", path)
	if code != exitFailed || !strings.Contains(stderr, path+" exists") {
		t.Errorf("init over an existing file: exit %d, %s", code, stderr)
	}

	if code, _, stderr := runCmd(t, "", "validate", "-c", path); code != exitOK {
		t.Fatalf("validate: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runCmd(t, string(sample), "schema", "preview", "-c", path); code != exitOK {
		t.Fatalf("schema preview: exit %d: %s", code, stderr)
	}

	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	free := strings.Replace(string(text), "listen: 127.0.0.1:9464", "listen: 127.0.0.1:0", 1)
	free = strings.Replace(free, "path: dead-letter-telemetry.ndjson", "path: "+filepath.Join(dir, "dl.ndjson"), 1)
	if err := os.WriteFile(path, []byte(free), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, string(sample), "run", "-c", path)
	if code != exitOK {
		t.Fatalf("run: exit %d:\n%s", code, stderr)
	}
	mustContain(t, "run's summary", stdout+stderr, "500 events read, 500 rows accepted", `holds 500 rows`)
}

// TestInitCommandUsage: the source is required and checked.
func TestInitCommandUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, `--source must be stdin, kafka or http, got ""`},
		{[]string{"--source", "mqtt"}, `--source must be stdin, kafka or http, got "mqtt"`},
		{[]string{"--source", "stdin", "extra"}, "Usage: pushd init"},
	} {
		code, _, stderr := runCmd(t, `{"a":1}`, append([]string{"init"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("init %v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, exitUsage, tc.want)
		}
	}
	code, _, stderr := runCmd(t, "not json\n", "init", "--source", "http")
	if code != exitFailed || stderr == "" {
		t.Errorf("init on input that is not JSON: exit %d, %q", code, stderr)
	}
}
