// Package provision makes the Power BI datasets and tables that a config
// describes exist: it plans what is missing (a dataset, columns of a table)
// and applies the plan through pushapi. It never drops a column unless asked.
//
// Power BI's push API can create a dataset with its tables, and replace the
// column list of an existing table (PutTable); it cannot add a table to an
// existing dataset, rename a column or change a column's type in place.
// Plan reports those differences as problems with the fix, next to the
// actions it can take.
package provision

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/schema"
)

// CreateDeadline is the last day Power BI accepts new push datasets (its
// retirement notice); binding to an existing dataset keeps working after it.
const CreateDeadline = "31 October 2027"

// API is what provisioning needs of the Power BI client; *pushapi.Client
// implements it.
type API interface {
	FindDatasetByName(ctx context.Context, workspaceID, name string) (pushapi.Dataset, error)
	GetDataset(ctx context.Context, workspaceID, datasetID string) (pushapi.Dataset, error)
	CreateDataset(ctx context.Context, workspaceID string, req pushapi.CreateDatasetRequest, retention string) (pushapi.Dataset, error)
	GetTables(ctx context.Context, workspaceID, datasetID string) ([]pushapi.Table, error)
	PutTable(ctx context.Context, workspaceID, datasetID string, t pushapi.Table) error
}

var _ API = (*pushapi.Client)(nil)

// Action kinds.
const (
	// CreateDataset creates a push dataset with all its tables.
	CreateDataset = "create_dataset"
	// UpdateTable replaces a table's column list (PutTable).
	UpdateTable = "update_table"
)

// Action is one change to make in Power BI.
type Action struct {
	// Kind is CreateDataset or UpdateTable.
	Kind        string
	WorkspaceID string
	// DatasetID is empty for CreateDataset.
	DatasetID string
	// Dataset is the request for CreateDataset; Retention its policy.
	Dataset   pushapi.CreateDatasetRequest
	Retention string
	// Table is the full new schema for UpdateTable (the columns Power BI
	// holds, in their order, then the new ones); Added and Dropped name the
	// columns that change.
	Table          pushapi.Table
	Added, Dropped []string
	// Replaced: Power BI did not list the table's columns, and the user
	// asked to set them to the config's (--replace-unknown-columns).
	Replaced bool
}

// String says what the action does, for people.
func (a Action) String() string {
	switch a.Kind {
	case CreateDataset:
		names := make([]string, len(a.Dataset.Tables))
		for i, t := range a.Dataset.Tables {
			names[i] = fmt.Sprintf("%q (%d columns)", t.Name, len(t.Columns))
		}
		return fmt.Sprintf("create dataset %q in workspace %s (mode %s, retention %s) with table %s",
			a.Dataset.Name, workspaceName(a.WorkspaceID), modeName(a.Dataset.DefaultMode), a.Retention, strings.Join(names, ", "))
	case UpdateTable:
		if a.Replaced {
			return fmt.Sprintf("set the columns of table %q of dataset %s, which Power BI listed without its columns, to %s (any other column is dropped)", a.Table.Name, a.DatasetID, strings.Join(a.Added, ", "))
		}
		var parts []string
		if len(a.Added) > 0 {
			parts = append(parts, "add column "+strings.Join(a.Added, ", "))
		}
		if len(a.Dropped) > 0 {
			parts = append(parts, "drop column "+strings.Join(a.Dropped, ", "))
		}
		return fmt.Sprintf("update table %q of dataset %s: %s", a.Table.Name, a.DatasetID, strings.Join(parts, "; "))
	}
	return a.Kind
}

func workspaceName(id string) string {
	if id == "" {
		return "My workspace"
	}
	return id
}

func modeName(m string) string {
	if m == "" {
		return pushapi.ModePush
	}
	return m
}

// Options change how Plan compares.
type Options struct {
	// DropColumns removes columns the config does not name (default: keep).
	DropColumns bool
	// CreateAll creates missing datasets even for pipelines whose
	// provision.create is false (the embedded emulator starts empty).
	CreateAll bool
	// ReplaceUnknownColumns sets a table's columns to the config's when
	// Power BI lists the table without its columns (GetTables may): any
	// other column the table has is dropped. Default: report it and
	// leave the table alone.
	ReplaceUnknownColumns bool
}

// group is the pipelines that write to one dataset.
type group struct {
	target    pushapi.Target // the first pipeline's target
	mode      string         // provision.mode of the first pipeline
	pipelines []int
	tables    []pushapi.Table // wanted tables, merged, in config order
	create    int             // index of the first pipeline allowed to create, or -1
}

// Plan compares the config's pipelines with what Power BI holds and returns
// the actions that would make them match. Problems that no action can fix
// (a missing dataset that may not be created, a table missing from an
// existing dataset, a column whose type differs) are returned as an error
// joining one error per problem, each naming the pipeline and the fix, next
// to the actions that can be taken. Failures to read from Power BI are
// reported the same way.
func Plan(ctx context.Context, api API, cfg *config.Config, opts Options) ([]Action, error) {
	groups, problems := groupPipelines(cfg, opts)
	var actions []Action
	for _, g := range groups {
		who := describe(cfg, g.pipelines)
		ds, err := FindDataset(ctx, api, g.target)
		if IsNotFound(err) {
			switch {
			case g.target.DatasetID != "":
				problems = append(problems, fmt.Errorf("%s: dataset id %s not found in workspace %s: check target.dataset_id, or set target.dataset_name with provision.create: true to create a dataset", who, g.target.DatasetID, workspaceName(g.target.WorkspaceID)))
			case g.create < 0:
				problems = append(problems, fmt.Errorf("%s: dataset %q not found in workspace %s and provision.create is false: set provision.create: true to let `pushd provision` create it, or point target at an existing push dataset", who, g.target.DatasetName, workspaceName(g.target.WorkspaceID)))
			default:
				cp := cfg.Pipelines[g.create]
				actions = append(actions, Action{
					Kind:        CreateDataset,
					WorkspaceID: g.target.WorkspaceID,
					Dataset:     pushapi.CreateDatasetRequest{Name: g.target.DatasetName, DefaultMode: modeName(cp.Provision.Mode), Tables: g.tables},
					Retention:   cp.Provision.Retention,
				})
			}
			continue
		}
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", who, err))
			continue
		}
		if !ds.AddRowsAPIEnabled {
			problems = append(problems, fmt.Errorf("%s: dataset %q (%s) is not a push dataset (addRowsAPIEnabled is false): pushd can add rows only to datasets created through the push API; point target at a push dataset or create one with provision.create: true and a new dataset_name", who, ds.Name, ds.ID))
			continue
		}
		have, err := api.GetTables(ctx, g.target.WorkspaceID, ds.ID)
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", who, err))
			continue
		}
		for _, want := range g.tables {
			ht := findTable(have, want.Name)
			if ht == nil {
				problems = append(problems, fmt.Errorf("%s: dataset %q (%s) has no table %q, and Power BI cannot add a table to an existing push dataset: create a new dataset (a new target.dataset_name with provision.create: true), or use one of its tables (%s)", who, ds.Name, ds.ID, want.Name, tableNames(have)))
				continue
			}
			if len(ht.Columns) == 0 {
				// Power BI has no table without columns: it listed the
				// table by name only. PutTable replaces the column list,
				// so adding the config's columns would drop the others.
				if !opts.ReplaceUnknownColumns {
					problems = append(problems, fmt.Errorf("%s: Power BI listed table %q of dataset %q (%s) without its columns, so provision cannot tell which columns it has and changes nothing (updating a table replaces its whole column list, which would drop every column the config does not name): check the table's columns in Power BI, then either leave it as it is, or run pushd provision --replace-unknown-columns to set its columns to the config's (%s) and drop any other", who, want.Name, ds.Name, ds.ID, columnNames(want.Columns)))
					continue
				}
				next := want
				if g.mode == pushapi.ModePushStreaming {
					next.Columns = bareColumns(next.Columns)
				}
				actions = append(actions, Action{Kind: UpdateTable, WorkspaceID: g.target.WorkspaceID, DatasetID: ds.ID, Table: next, Added: names(want.Columns), Replaced: true})
				continue
			}
			d := Diff(*ht, want)
			for _, m := range d.Renamed {
				problems = append(problems, fmt.Errorf("%s: table %q has column %q where the config says %q (Power BI column names ignore case, and the push API cannot rename): write %q in the config", who, ht.Name, m.Have, m.Want, m.Have))
			}
			for _, m := range d.Retyped {
				problems = append(problems, fmt.Errorf("%s: table %q column %q is %s in Power BI but %s in the config, and the push API cannot change a column's type: set type: %s in the config, or create a new dataset", who, ht.Name, m.Column, m.Have, m.Want, m.Have))
			}
			if a := d.action(*ht, want, opts.DropColumns); a != nil {
				a.WorkspaceID, a.DatasetID = g.target.WorkspaceID, ds.ID
				if g.mode == pushapi.ModePushStreaming {
					a.Table.Columns = bareColumns(a.Table.Columns)
				}
				actions = append(actions, *a)
			}
		}
	}
	return actions, errors.Join(problems...)
}

// groupPipelines gathers the pipelines by dataset, in config order, merging
// the columns of pipelines that write to the same table.
func groupPipelines(cfg *config.Config, opts Options) ([]*group, []error) {
	var (
		groups   []*group
		byKey    = map[string]*group{}
		problems []error
	)
	for i, p := range cfg.Pipelines {
		if !p.HasPowerBI() {
			continue // an eventstream-only pipeline: nothing to provision in Power BI
		}
		key := datasetKey(p.Target)
		g := byKey[key]
		if g == nil {
			g = &group{target: p.Target, mode: p.Provision.Mode, create: -1}
			byKey[key] = g
			groups = append(groups, g)
		}
		g.pipelines = append(g.pipelines, i)
		if g.create < 0 && (p.Provision.Create || opts.CreateAll) {
			g.create = i
		}
		want := TableFor(p)
		j := -1
		for k, t := range g.tables {
			if t.Name == want.Name {
				j = k
			}
		}
		if j < 0 {
			g.tables = append(g.tables, want)
			continue
		}
		merged, conflicts := mergeColumns(g.tables[j], want)
		g.tables[j] = merged
		for _, c := range conflicts {
			problems = append(problems, fmt.Errorf("pipelines[%d] (%s): %s", i, p.Name, c))
		}
	}
	return groups, problems
}

// mergeColumns adds to t the columns of more it lacks; a column both name
// with different types is a conflict.
func mergeColumns(t, more pushapi.Table) (pushapi.Table, []string) {
	var conflicts []string
	t.Columns = append([]pushapi.Column(nil), t.Columns...)
	for _, c := range more.Columns {
		k := findColumn(t.Columns, c.Name)
		switch {
		case k < 0:
			t.Columns = append(t.Columns, c)
		case t.Columns[k].DataType != c.DataType:
			conflicts = append(conflicts, fmt.Sprintf("column %q of table %q is %s here but %s in another pipeline writing to the same table: make the types equal", c.Name, t.Name, c.DataType, t.Columns[k].DataType))
		}
	}
	return t, conflicts
}

func datasetKey(t pushapi.Target) string {
	if t.DatasetID != "" {
		return strings.ToLower(t.WorkspaceID) + "/id/" + strings.ToLower(t.DatasetID)
	}
	return strings.ToLower(t.WorkspaceID) + "/name/" + t.DatasetName
}

// describe names the pipelines of a group for messages.
func describe(cfg *config.Config, idx []int) string {
	parts := make([]string, len(idx))
	for k, i := range idx {
		parts[k] = fmt.Sprintf("pipelines[%d] (%s)", i, cfg.Pipelines[i].Name)
	}
	return strings.Join(parts, ", ")
}

func findTable(tables []pushapi.Table, name string) *pushapi.Table {
	for i := range tables {
		if tables[i].Name == name {
			return &tables[i]
		}
	}
	return nil
}

func tableNames(tables []pushapi.Table) string {
	if len(tables) == 0 {
		return "it has none"
	}
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = fmt.Sprintf("%q", t.Name)
	}
	return strings.Join(names, ", ")
}

// findColumn returns the index of the column called name, compared without
// case as Power BI does, or -1.
func findColumn(cols []pushapi.Column, name string) int {
	for i, c := range cols {
		if strings.EqualFold(c.Name, name) {
			return i
		}
	}
	return -1
}

// FindDataset looks up a target's dataset: by id when the target names one,
// else by name. IsNotFound tells a missing dataset from other failures.
func FindDataset(ctx context.Context, api API, t pushapi.Target) (pushapi.Dataset, error) {
	if t.DatasetID != "" {
		return api.GetDataset(ctx, t.WorkspaceID, t.DatasetID)
	}
	return api.FindDatasetByName(ctx, t.WorkspaceID, t.DatasetName)
}

// IsNotFound reports whether err says a dataset does not exist: no dataset
// of the name (pushapi.ErrNotFound) or a 404 for a dataset id.
func IsNotFound(err error) bool {
	if errors.Is(err, pushapi.ErrNotFound) {
		return true
	}
	var ae *pushapi.APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound && ae.Op == "GetDataset"
}

// TableDiff is how a table in Power BI differs from the config's.
type TableDiff struct {
	// Missing are the config's columns Power BI lacks, in config order.
	Missing []pushapi.Column
	// Extra are Power BI's columns the config does not name (they stay empty).
	Extra []string
	// Retyped are columns whose type differs.
	Retyped []Retype
	// Renamed are columns whose name differs only in case.
	Renamed []Rename
}

// Retype is a column whose type in Power BI differs from the config's.
type Retype struct{ Column, Have, Want string }

// Rename is a column named with different case in Power BI and the config.
type Rename struct{ Have, Want string }

// Match reports whether the table needs no change for the config (extra
// columns in Power BI do no harm).
func (d TableDiff) Match() bool {
	return len(d.Missing) == 0 && len(d.Retyped) == 0 && len(d.Renamed) == 0
}

// Diff compares a table as Power BI holds it with the table a config wants.
// Column names compare without case, as Power BI does; types compare by
// their canonical names (schema.CanonicalType).
func Diff(have, want pushapi.Table) TableDiff {
	var d TableDiff
	for _, c := range want.Columns {
		k := findColumn(have.Columns, c.Name)
		if k < 0 {
			d.Missing = append(d.Missing, c)
			continue
		}
		hc := have.Columns[k]
		if hc.Name != c.Name {
			d.Renamed = append(d.Renamed, Rename{Have: hc.Name, Want: c.Name})
		}
		if canonical(hc.DataType) != canonical(c.DataType) {
			d.Retyped = append(d.Retyped, Retype{Column: hc.Name, Have: hc.DataType, Want: c.DataType})
		}
	}
	for _, c := range have.Columns {
		if findColumn(want.Columns, c.Name) < 0 {
			d.Extra = append(d.Extra, c.Name)
		}
	}
	return d
}

func canonical(t string) string {
	if c, ok := schema.CanonicalType(t); ok {
		return c
	}
	return t
}

// action returns the PutTable that adds the missing columns (and drops the
// extra ones when drop is set), or nil when nothing changes. PutTable
// replaces the column list, so the new list is Power BI's columns (with
// their formats and flags), minus the dropped, plus the missing; the
// table's measures are kept.
func (d TableDiff) action(have, want pushapi.Table, drop bool) *Action {
	var dropped []string
	if drop {
		dropped = d.Extra
	}
	if len(d.Missing) == 0 && len(dropped) == 0 {
		return nil
	}
	next := have
	next.Columns = nil
	for _, c := range have.Columns {
		if drop && findColumn(want.Columns, c.Name) < 0 {
			continue
		}
		next.Columns = append(next.Columns, c)
	}
	added := make([]string, len(d.Missing))
	for i, c := range d.Missing {
		next.Columns = append(next.Columns, c)
		added[i] = c.Name
	}
	if len(next.Columns) == 0 {
		return nil // nothing would be left: Power BI refuses an empty table
	}
	return &Action{Kind: UpdateTable, Table: next, Added: added, Dropped: dropped}
}

// bareColumns keeps only each column's name and dataType: a PushStreaming
// dataset refuses any other column property (400 InvalidRequest "This
// dataset or endpoint does not support column properties other than name
// and dataType.").
func bareColumns(cols []pushapi.Column) []pushapi.Column {
	out := make([]pushapi.Column, len(cols))
	for i, c := range cols {
		out[i] = pushapi.Column{Name: c.Name, DataType: c.DataType}
	}
	return out
}

func names(cols []pushapi.Column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.Name
	}
	return out
}

func columnNames(cols []pushapi.Column) string {
	return strings.Join(names(cols), ", ")
}

// TableFor is the Power BI table a pipeline writes, with the types in Power
// BI's canonical spelling: the schema's columns, or with reduce mode
// aggregate the columns of the aggregated rows.
func TableFor(p config.Pipeline) pushapi.Table {
	t := pushapi.Table{Name: p.Target.Table, Columns: []pushapi.Column{}}
	for _, c := range p.Reduce.OutputColumns(p.Schema.Columns) {
		t.Columns = append(t.Columns, pushapi.Column{Name: c.Name, DataType: canonical(c.Type)})
	}
	return t
}

// Apply carries out the actions in order and returns the datasets it
// created, by name. It stops at the first failure, which names the action.
func Apply(ctx context.Context, api API, actions []Action) (map[string]pushapi.Dataset, error) {
	created := map[string]pushapi.Dataset{}
	for _, a := range actions {
		switch a.Kind {
		case CreateDataset:
			ds, err := api.CreateDataset(ctx, a.WorkspaceID, a.Dataset, a.Retention)
			if err != nil {
				return created, fmt.Errorf("provision: %s: %w", a, err)
			}
			created[a.Dataset.Name] = ds
		case UpdateTable:
			if err := api.PutTable(ctx, a.WorkspaceID, a.DatasetID, a.Table); err != nil {
				return created, fmt.Errorf("provision: %s: %w", a, err)
			}
		default:
			return created, fmt.Errorf("provision: unknown action %q", a.Kind)
		}
	}
	return created, nil
}
