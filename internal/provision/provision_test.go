package provision_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/provision"
	"github.com/pushd/pushd/internal/provision/provisiontest"
	"github.com/pushd/pushd/internal/pushapi"
)

const ws = provisiontest.Workspace

func load(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// columns renders a table's columns as "Name:Type,...".
func columns(t pushapi.Table) string {
	parts := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		parts[i] = c.Name + ":" + c.DataType
	}
	return strings.Join(parts, ",")
}

func tablesOf(t *testing.T, c *pushapi.Client, datasetID string) map[string]string {
	t.Helper()
	tables, err := c.GetTables(context.Background(), ws, datasetID)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tb := range tables {
		out[tb.Name] = columns(tb)
	}
	return out
}

func TestProvisionCreatesExactlyTheConfigAndIsIdempotent(t *testing.T) {
	env := provisiontest.Start(t)
	path := env.WriteConfig(t, "ops.yaml",
		provisiontest.Pipeline("readings", "Plant Ops", "Readings", true,
			"{name: DeviceId, type: string, from: device.id, required: true}",
			"{name: Time, type: timestamp, from: ts}",
			"{name: Value, type: float}"),
		provisiontest.Pipeline("alarms", "Plant Ops", "Alarms", true,
			"{name: DeviceId, type: String}",
			"{name: Active, type: bool}",
			"{name: Count, type: int}"),
		// A second pipeline into Readings adds a column to the same table.
		provisiontest.Pipeline("readings-extra", "Plant Ops", "Readings", false,
			"{name: DeviceId, type: String}",
			"{name: Unit, type: String}"),
	)
	cfg := load(t, path)
	c := provisiontest.Client(t, cfg)
	ctx := context.Background()

	actions, err := provision.Plan(ctx, c, cfg, provision.Options{})
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	if len(actions) != 1 || actions[0].Kind != provision.CreateDataset {
		t.Fatalf("actions = %v, want one create_dataset", actions)
	}
	if s := actions[0].String(); !strings.Contains(s, `create dataset "Plant Ops"`) || !strings.Contains(s, "retention basicFIFO") {
		t.Errorf("action text %q", s)
	}
	created, err := provision.Apply(ctx, c, actions)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	ds, ok := created["Plant Ops"]
	if !ok || ds.ID == "" {
		t.Fatalf("created = %v", created)
	}

	all, err := c.ListDatasets(ctx, ws)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Name != "Plant Ops" || !all[0].AddRowsAPIEnabled {
		t.Fatalf("datasets = %+v, want exactly Plant Ops (push)", all)
	}
	got := tablesOf(t, c, ds.ID)
	want := map[string]string{
		"Readings": "DeviceId:String,Time:DateTime,Value:Double,Unit:String",
		"Alarms":   "DeviceId:String,Active:Boolean,Count:Int64",
	}
	if len(got) != len(want) {
		t.Errorf("tables = %v, want %v", got, want)
	}
	for name, cols := range want {
		if got[name] != cols {
			t.Errorf("table %s columns = %q, want %q", name, got[name], cols)
		}
	}
	if r := env.Emulator.Stats().Datasets[ds.ID].Retention; r != emulator.RetentionBasicFIFO {
		t.Errorf("retention = %q, want basicFIFO", r)
	}

	again, err := provision.Plan(ctx, c, cfg, provision.Options{})
	if err != nil || len(again) != 0 {
		t.Fatalf("second Plan = %v, %v; want nothing to do", again, err)
	}
}

func TestProvisionAddsAndDropsColumns(t *testing.T) {
	env := provisiontest.Start(t)
	id := env.CreateDataset(t, "Push", "Sensors", "Readings",
		"DeviceId", "String", "Value", "Double", "Legacy", "String")
	path := env.WriteConfig(t, "sensors.yaml",
		provisiontest.Pipeline("readings", "Sensors", "Readings", false,
			"{name: DeviceId, type: String}",
			"{name: Value, type: Double}",
			"{name: Battery, type: Double}",
			"{name: Online, type: Boolean}"))
	cfg := load(t, path)
	c := provisiontest.Client(t, cfg)
	ctx := context.Background()

	for _, tc := range []struct {
		name        string
		opts        provision.Options
		wantAdded   string
		wantDropped string
		wantCols    string
	}{
		{"keep extra columns by default", provision.Options{}, "Battery,Online", "",
			"DeviceId:String,Value:Double,Legacy:String,Battery:Double,Online:Boolean"},
		{"drop extra columns when asked", provision.Options{DropColumns: true}, "", "Legacy",
			"DeviceId:String,Value:Double,Battery:Double,Online:Boolean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			actions, err := provision.Plan(ctx, c, cfg, tc.opts)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			if len(actions) != 1 || actions[0].Kind != provision.UpdateTable || actions[0].DatasetID != id {
				t.Fatalf("actions = %+v, want one update_table of %s", actions, id)
			}
			a := actions[0]
			if got := strings.Join(a.Added, ","); got != tc.wantAdded {
				t.Errorf("added = %q, want %q", got, tc.wantAdded)
			}
			if got := strings.Join(a.Dropped, ","); got != tc.wantDropped {
				t.Errorf("dropped = %q, want %q", got, tc.wantDropped)
			}
			if _, err := provision.Apply(ctx, c, actions); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got := tablesOf(t, c, id)["Readings"]; got != tc.wantCols {
				t.Errorf("columns = %q, want %q", got, tc.wantCols)
			}
			again, err := provision.Plan(ctx, c, cfg, tc.opts)
			if err != nil || len(again) != 0 {
				t.Errorf("Plan after Apply = %v, %v; want nothing", again, err)
			}
		})
	}
}

func TestProvisionProblems(t *testing.T) {
	env := provisiontest.Start(t)
	env.CreateDataset(t, "Push", "Existing", "Readings", "DeviceId", "String", "seq", "Int64")
	env.CreateDataset(t, "Streaming", "Streaming Only", "Readings", "DeviceId", "String")
	cols := []string{"{name: DeviceId, type: String}", "{name: Seq, type: Int64}"}
	ctx := context.Background()

	for _, tc := range []struct {
		name     string
		pipeline []string
		want     []string // substrings of the error
	}{
		{"missing dataset without provision.create",
			[]string{provisiontest.Pipeline("p", "Absent", "T", false, cols...)},
			[]string{`dataset "Absent" not found`, "provision.create is false", "set provision.create: true"}},
		{"table missing from an existing dataset",
			[]string{provisiontest.Pipeline("p", "Existing", "Other", true, cols...)},
			[]string{`has no table "Other"`, "cannot add a table to an existing push dataset", `"Readings"`}},
		{"column differing in case",
			[]string{provisiontest.Pipeline("p", "Existing", "Readings", false, cols...)},
			[]string{`column "seq" where the config says "Seq"`, `write "seq"`}},
		{"column with another type",
			[]string{provisiontest.Pipeline("p", "Existing", "Readings", false, "{name: DeviceId, type: Int64}", "{name: seq, type: Int64}")},
			[]string{`column "DeviceId" is String in Power BI but Int64 in the config`, "set type: String"}},
		{"not a push dataset",
			[]string{provisiontest.Pipeline("p", "Streaming Only", "Readings", false, cols...)},
			[]string{"addRowsAPIEnabled is false"}},
		{"pipelines disagree on a column type",
			[]string{
				provisiontest.Pipeline("a", "New", "T", true, "{name: X, type: String}"),
				provisiontest.Pipeline("b", "New", "T", true, "{name: X, type: Double}"),
			},
			[]string{`pipelines[1] (b): column "X" of table "T" is Double here but String`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := load(t, env.WriteConfig(t, "p.yaml", tc.pipeline...))
			actions, err := provision.Plan(ctx, provisiontest.Client(t, cfg), cfg, provision.Options{})
			if err == nil {
				t.Fatalf("Plan succeeded with actions %v", actions)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}

func TestProvisionDatasetIDNotFound(t *testing.T) {
	env := provisiontest.Start(t)
	path := env.WriteConfig(t, "p.yaml", provisiontest.Pipeline("p", "x", "T", false, "{name: A, type: String}"))
	cfg := load(t, path)
	cfg.Pipelines[0].Target.DatasetName = ""
	cfg.Pipelines[0].Target.DatasetID = "9d0b2a3c-1111-4222-8333-444455556666"
	_, err := provision.Plan(context.Background(), provisiontest.Client(t, cfg), cfg, provision.Options{})
	if err == nil || !strings.Contains(err.Error(), "dataset id 9d0b2a3c-1111-4222-8333-444455556666 not found") {
		t.Fatalf("err = %v", err)
	}
}

func TestPlanCreateAllIgnoresProvisionCreate(t *testing.T) {
	env := provisiontest.Start(t)
	cfg := load(t, env.WriteConfig(t, "p.yaml", provisiontest.Pipeline("p", "Fresh", "T", false, "{name: A, type: String}")))
	actions, err := provision.Plan(context.Background(), provisiontest.Client(t, cfg), cfg, provision.Options{CreateAll: true})
	if err != nil || len(actions) != 1 || actions[0].Kind != provision.CreateDataset || actions[0].Dataset.DefaultMode != pushapi.ModePush {
		t.Fatalf("actions = %+v, err = %v", actions, err)
	}
}

func TestDiff(t *testing.T) {
	have := pushapi.Table{Name: "T", Columns: []pushapi.Column{
		{Name: "A", DataType: "string"}, {Name: "b", DataType: "Int64"}, {Name: "Old", DataType: "Double"},
	}}
	want := pushapi.Table{Name: "T", Columns: []pushapi.Column{
		{Name: "A", DataType: "String"}, {Name: "B", DataType: "Double"}, {Name: "New", DataType: "Boolean"},
	}}
	d := provision.Diff(have, want)
	if d.Match() {
		t.Fatal("Match() = true")
	}
	if len(d.Missing) != 1 || d.Missing[0].Name != "New" {
		t.Errorf("Missing = %v", d.Missing)
	}
	if len(d.Extra) != 1 || d.Extra[0] != "Old" {
		t.Errorf("Extra = %v", d.Extra)
	}
	if len(d.Retyped) != 1 || d.Retyped[0] != (provision.Retype{Column: "b", Have: "Int64", Want: "Double"}) {
		t.Errorf("Retyped = %v", d.Retyped)
	}
	if len(d.Renamed) != 1 || d.Renamed[0] != (provision.Rename{Have: "b", Want: "B"}) {
		t.Errorf("Renamed = %v", d.Renamed)
	}
	if !provision.Diff(have, pushapi.Table{Name: "T", Columns: have.Columns[:1]}).Match() {
		t.Error("a subset of Power BI's columns should match")
	}
}

// failingAPI fails every call, to check that Apply names the action.
type failingAPI struct{ provision.API }

func (failingAPI) PutTable(context.Context, string, string, pushapi.Table) error {
	return errors.New("boom")
}

func TestApplyNamesTheFailedAction(t *testing.T) {
	_, err := provision.Apply(context.Background(), failingAPI{}, []provision.Action{{
		Kind: provision.UpdateTable, DatasetID: "d1", Table: pushapi.Table{Name: "T"}, Added: []string{"X"},
	}})
	if err == nil || !strings.Contains(err.Error(), `update table "T" of dataset d1: add column X: boom`) {
		t.Fatalf("err = %v", err)
	}
}

// An aggregating pipeline writes its aggregated rows: the table must have
// their columns, not the schema's.
func TestTableForAggregate(t *testing.T) {
	cfg, err := config.Parse([]byte(`
powerbi: {auth: {method: static_token, token: x}}
pipelines:
  - name: p
    source: {type: stdin}
    target: {dataset_id: cfafbeb1-8037-4d0c-896e-a46fb27ff229, table: T}
    schema:
      columns: [{name: device, type: string}, {name: ts, type: datetime}, {name: temp, type: double}]
    reduce:
      mode: aggregate
      window: 10s
      time_column: ts
      group_by: [device]
      aggregates: [{name: readings, function: count}, {name: avg_temp, function: avg, column: temp}]
`), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got := columns(provision.TableFor(cfg.Pipelines[0]))
	if want := "device:String,window_start:DateTime,readings:Int64,avg_temp:Double"; got != want {
		t.Errorf("table columns %s, want %s", got, want)
	}
}

// TestProvisionTableListedWithoutColumns: GetTables may list a table by
// name only. Provision must not take that for an empty table (PutTable of
// the config's columns would drop the others): it says so and changes
// nothing, unless asked with ReplaceUnknownColumns.
func TestProvisionTableListedWithoutColumns(t *testing.T) {
	env := provisiontest.StartWith(t, func(c *emulator.Config) { c.TablesWithoutColumns = true })
	id := env.CreateDataset(t, "Push", "Sensors", "Readings", "DeviceId", "String", "Legacy", "String")
	path := env.WriteConfig(t, "sensors.yaml",
		provisiontest.Pipeline("readings", "Sensors", "Readings", false,
			"{name: DeviceId, type: String}",
			"{name: Value, type: Double}"))
	cfg := load(t, path)
	c := provisiontest.Client(t, cfg)
	ctx := context.Background()
	held := func() string {
		var parts []string
		for _, col := range env.Emulator.Columns(id, "Readings") {
			parts = append(parts, col.Name+":"+col.DataType)
		}
		return strings.Join(parts, ",")
	}

	actions, err := provision.Plan(ctx, c, cfg, provision.Options{DropColumns: false})
	if len(actions) != 0 {
		t.Errorf("actions = %v, want none", actions)
	}
	if err == nil || !strings.Contains(err.Error(), `listed table "Readings"`) || !strings.Contains(err.Error(), "without its columns") || !strings.Contains(err.Error(), "--replace-unknown-columns") {
		t.Errorf("err = %v, want the unknown columns reported with the flag that overrides", err)
	}
	if got := held(); got != "DeviceId:String,Legacy:String" {
		t.Fatalf("columns = %q, want them untouched", got)
	}

	actions, err = provision.Plan(ctx, c, cfg, provision.Options{ReplaceUnknownColumns: true})
	if err != nil || len(actions) != 1 || !actions[0].Replaced {
		t.Fatalf("Plan with ReplaceUnknownColumns = %v, %v; want one replacement", actions, err)
	}
	if s := actions[0].String(); !strings.Contains(s, "listed without its columns") || !strings.Contains(s, "dropped") {
		t.Errorf("action text %q", s)
	}
	if _, err := provision.Apply(ctx, c, actions); err != nil {
		t.Fatal(err)
	}
	if got := held(); got != "DeviceId:String,Value:Double" {
		t.Errorf("columns = %q, want the config's", got)
	}
}

// TestProvisionPushStreamingSendsOnlyNameAndDataType: a PushStreaming
// dataset refuses column properties other than name and dataType (the
// emulator answers 400 InvalidRequest as Power BI does); provision creates
// one, then adds a column to it, sending only those.
func TestProvisionPushStreamingSendsOnlyNameAndDataType(t *testing.T) {
	env := provisiontest.Start(t)
	streaming := func(p string) string {
		return strings.Replace(p, "retention: basicFIFO\n", "retention: basicFIFO\n      mode: PushStreaming\n", 1)
	}
	first := env.WriteConfig(t, "a.yaml", streaming(provisiontest.Pipeline("live", "Live", "Readings", true,
		"{name: DeviceId, type: String}")))
	cfg := load(t, first)
	c := provisiontest.Client(t, cfg)
	ctx := context.Background()
	for _, path := range []string{first, env.WriteConfig(t, "b.yaml", streaming(provisiontest.Pipeline("live", "Live", "Readings", true,
		"{name: DeviceId, type: String}", "{name: Value, type: Double}")))} {
		cfg := load(t, path)
		actions, err := provision.Plan(ctx, c, cfg, provision.Options{})
		if err != nil || len(actions) != 1 {
			t.Fatalf("%s: Plan = %v, %v", path, actions, err)
		}
		if _, err := provision.Apply(ctx, c, actions); err != nil {
			t.Fatalf("%s: Apply: %v", path, err)
		}
	}
	ds, err := c.FindDatasetByName(ctx, ws, "Live")
	if err != nil {
		t.Fatal(err)
	}
	if got := tablesOf(t, c, ds.ID)["Readings"]; got != "DeviceId:String,Value:Double" {
		t.Errorf("columns = %q", got)
	}
}
