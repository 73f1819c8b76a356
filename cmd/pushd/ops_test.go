package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/provision/provisiontest"
	"github.com/pushd/pushd/internal/schema"
)

// runCmd runs a subcommand and returns its exit code and output.
func runCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := dispatch(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func mustContain(t *testing.T, what, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, text)
		}
	}
}

// tableColumns returns "Name:Type,..." of a table in the emulator.
func tableColumns(t *testing.T, env *provisiontest.Env, path, dataset, table string) string {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	c := provisiontest.Client(t, cfg)
	ds, err := c.FindDatasetByName(context.Background(), provisiontest.Workspace, dataset)
	if err != nil {
		return ""
	}
	tables, err := c.GetTables(context.Background(), provisiontest.Workspace, ds.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == table {
			var parts []string
			for _, col := range tb.Columns {
				parts = append(parts, col.Name+":"+col.DataType)
			}
			return strings.Join(parts, ",")
		}
	}
	return ""
}

func TestProvisionCommand(t *testing.T) {
	env := provisiontest.Start(t)
	cols := []string{"{name: DeviceId, type: String, from: device.id}", "{name: Seq, type: Int64}"}
	first := env.WriteConfig(t, "v1.yaml", provisiontest.Pipeline("telemetry", "IoT Telemetry", "Telemetry", true, cols...))
	second := env.WriteConfig(t, "v2.yaml", provisiontest.Pipeline("telemetry", "IoT Telemetry", "Telemetry", true,
		append(cols, "{name: Battery, type: Double}")...))

	steps := []struct {
		name     string
		args     []string
		code     int
		out      []string
		wantCols string
	}{
		{"dry run changes nothing", []string{"--dry-run", "-c", first}, exitOK,
			[]string{`would create dataset "IoT Telemetry" in workspace ` + provisiontest.Workspace, "retention basicFIFO", `"Telemetry" (2 columns)`, "dry run: nothing was changed", "only until 31 October 2027"}, ""},
		{"creates the dataset", []string{"-c", first}, exitOK,
			[]string{`done: create dataset "IoT Telemetry"`, "(dataset id ", "only until 31 October 2027"}, "DeviceId:String,Seq:Int64"},
		{"second run does nothing", []string{"-c", first}, exitOK,
			[]string{"nothing to do"}, "DeviceId:String,Seq:Int64"},
		{"dry run of a new column changes nothing", []string{"-c", second, "--dry-run"}, exitOK,
			[]string{`would update table "Telemetry"`, "add column Battery"}, "DeviceId:String,Seq:Int64"},
		{"adds a new column", []string{"-c", second}, exitOK,
			[]string{`done: update table "Telemetry"`, "add column Battery"}, "DeviceId:String,Seq:Int64,Battery:Double"},
		{"keeps a column the config no longer names", []string{"-c", first}, exitOK,
			[]string{"nothing to do"}, "DeviceId:String,Seq:Int64,Battery:Double"},
		{"drops it when told", []string{"-c", first, "--drop-columns"}, exitOK,
			[]string{"drop column Battery"}, "DeviceId:String,Seq:Int64"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, "", append([]string{"provision"}, s.args...)...)
			if code != s.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, s.code, out, errOut)
			}
			mustContain(t, "stdout", out, s.out...)
			if got := tableColumns(t, env, first, "IoT Telemetry", "Telemetry"); got != s.wantCols {
				t.Errorf("columns in Power BI = %q, want %q", got, s.wantCols)
			}
		})
	}
}

func TestProvisionCommandProblemsAndUsage(t *testing.T) {
	env := provisiontest.Start(t)
	env.CreateDataset(t, "Push", "Existing", "Readings", "A", "String")
	noCreate := env.WriteConfig(t, "nocreate.yaml", provisiontest.Pipeline("p", "Absent", "T", false, "{name: A, type: String}"))
	noTable := env.WriteConfig(t, "notable.yaml", provisiontest.Pipeline("p", "Existing", "Other", true, "{name: A, type: String}"))
	badSecret := env.WriteConfigWithSecret(t, "secret.yaml", "wrong", provisiontest.Pipeline("p", "Existing", "Readings", false, "{name: A, type: String}"))
	embedded := filepath.Join(env.Dir, "embedded.yaml")
	if err := os.WriteFile(embedded, []byte(`emulator: {embedded: true}
metrics: {enabled: false}
pipelines:
  - name: p
    source: {type: stdin}
    target: {workspace_id: `+provisiontest.Workspace+`, dataset_name: X, table: T}
    schema: {columns: [{name: A, type: String}]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
	}{
		{"missing dataset without create", []string{"-c", noCreate}, exitFailed,
			[]string{`problem: pipelines[0] (p): dataset "Absent" not found`, "set provision.create: true", "1 problem(s) left"}, nil},
		{"table missing from an existing dataset", []string{"-c", noTable}, exitFailed,
			[]string{"cannot add a table to an existing push dataset", "create a new dataset"}, nil},
		{"wrong secret", []string{"-c", badSecret}, exitFailed,
			[]string{"AADSTS7000215", "pushd doctor -c " + badSecret}, nil},
		{"embedded emulator", []string{"-c", embedded}, exitUsage,
			nil, []string{"emulator.embedded: true", "nothing to provision"}},
		{"no config", nil, exitUsage, nil, []string{"Usage: pushd provision -c FILE"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, "", append([]string{"provision"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			mustContain(t, "stdout", out, tc.stdout...)
			mustContain(t, "stderr", errOut, tc.stderr...)
		})
	}
	if n := len(env.Emulator.Stats().Datasets); n != 1 {
		t.Errorf("emulator holds %d datasets, want the 1 created by the test", n)
	}
}

func TestDoctorCommand(t *testing.T) {
	env := provisiontest.Start(t)
	env.CreateDataset(t, "Push", "Good", "Readings", "A", "String", "B", "Int64")
	pipeline := provisiontest.Pipeline("telemetry", "Good", "Readings", false, "{name: A, type: String}", "{name: B, type: Int64}")
	good := env.WriteConfig(t, "good.yaml", pipeline)
	bad := env.WriteConfigWithSecret(t, "bad.yaml", "secret-id-instead-of-value", pipeline)
	for _, tc := range []struct {
		name string
		path string
		code int
		out  []string
	}{
		{"all good", good, exitOK, []string{"PASS  config", "PASS  token", "PASS  workspace", "PASS  dataset (telemetry)", "PASS  table (telemetry)", "PASS  source (telemetry)", "all checks passed"}},
		{"wrong secret", bad, exitFailed, []string{"PASS  config", "FAIL  token", "AADSTS7000215", "fix: create a new client secret", "copy its Value, not its Secret ID", "SKIP  workspace", "1 check(s) failed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, "", "doctor", "-c", tc.path, "-timeout", "5s")
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			mustContain(t, "stdout", out, tc.out...)
			if strings.Contains(out+errOut, "secret-id-instead-of-value") {
				t.Error("doctor printed the client secret")
			}
		})
	}
	if posts := env.Emulator.Stats().Requests[emulator.RoutePostRows]; len(posts) != 0 {
		t.Errorf("doctor posted rows: %v", posts)
	}
}

func TestSchemaInferCommand(t *testing.T) {
	events, err := os.ReadFile("../../configs/sample-events.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCmd(t, string(events), "schema", "infer", "--table", "Telemetry")
	if code != exitOK {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	mustContain(t, "output", out, "# Inferred by `pushd schema infer` from 500 events", "schema:\n  columns:\n",
		"{name: DeviceId,", "from: device.id,", "type: DateTime, from: ts,")

	// Spliced into a pipeline, the section validates and maps every event.
	indented := "    " + strings.ReplaceAll(strings.TrimRight(out, "\n"), "\n", "\n    ") + "\n"
	text := `powerbi: {auth: {method: managed_identity}}
pipelines:
  - name: inferred
    source: {type: stdin}
    target: {workspace_id: ` + provisiontest.Workspace + `, dataset_name: Inferred, table: Telemetry}
` + indented
	cfg, err := config.Parse([]byte(text), "inferred.yaml")
	if err != nil {
		t.Fatalf("inferred schema does not validate:\n%v\n%s", err, text)
	}
	m, err := schema.New(cfg.Pipelines[0].Schema)
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range bytes.Split(bytes.TrimSpace(events), []byte("\n")) {
		if _, err := m.Map(line, nil, nil); err != nil {
			t.Errorf("event %d: %v", i+1, err)
		}
	}

	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		code  int
		err   string
	}{
		{"not JSON", []string{"schema", "infer"}, "hello", exitFailed, "reading event 1"},
		{"no subcommand", []string{"schema"}, "", exitUsage, "Usage: pushd schema infer"},
		{"negative sample", []string{"schema", "infer", "--sample", "-1"}, "", exitUsage, "Usage: pushd schema infer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCmd(t, tc.stdin, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.err) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.err)
			}
		})
	}
}

// TestRunNamesProvisionWhenTheDatasetIsMissing: a dataset that is not in
// the workspace, by name or by id, ends the run with the next step to take.
func TestRunNamesProvisionWhenTheDatasetIsMissing(t *testing.T) {
	env := provisiontest.Start(t)
	stdin := "    source: {type: stdin}\n"
	cols := []string{"{name: DeviceId, type: String, from: device.id}"}
	byName := strings.Replace(provisiontest.Pipeline("telemetry", "Absent", "Telemetry", true, cols...), provisiontest.SourceHTTP, stdin, 1)
	otherID := env.CreateDataset(t, "Push", "Present", "Other", "DeviceId", "String")
	byID := strings.Replace(byName, `dataset_name: "Absent"`, "dataset_id: "+otherID, 1)
	byID = strings.Replace(byID, "create: true", "create: false", 1)
	for _, tc := range []struct {
		name, pipeline string
		want           []string
	}{
		{"by name", byName, []string{`dataset "Absent"`, "not found", "the dataset is not there: run `pushd provision -c"}},
		{"table missing in a dataset given by id", byID, []string{"Power BI does not know the dataset or table", "pushd provision -c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := env.WriteConfig(t, "run.yaml", tc.pipeline)
			code, _, errOut := runCmd(t, `{"device":{"id":"d1"}}`+"\n", "run", "-c", path)
			if code != exitFailed {
				t.Fatalf("exit %d, want %d:\n%s", code, exitFailed, errOut)
			}
			mustContain(t, "stderr", errOut, append(tc.want, path)...)
		})
	}
}
