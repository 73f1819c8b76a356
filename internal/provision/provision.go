// Package provision makes the Power BI datasets and tables that a config
// describes exist: it plans what is missing (a dataset, columns of a table)
// and applies the plan through pushapi. It never drops a column unless asked.
package provision

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/schema"
)

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
	CreateDataset = "create_dataset"
	UpdateTable   = "update_table"
)

// Action is one change to make in Power BI.
type Action struct {
	Kind        string
	WorkspaceID string
	// DatasetID is empty for CreateDataset.
	DatasetID string
	// Dataset is the request for CreateDataset; Retention its policy.
	Dataset   pushapi.CreateDatasetRequest
	Retention string
	// Table is the full new schema for UpdateTable; Added and Dropped name
	// the columns that change.
	Table          pushapi.Table
	Added, Dropped []string
}

// String says what the action does, for people.
func (a Action) String() string {
	switch a.Kind {
	case CreateDataset:
		names := make([]string, len(a.Dataset.Tables))
		for i, t := range a.Dataset.Tables {
			names[i] = fmt.Sprintf("%s (%d columns)", t.Name, len(t.Columns))
		}
		return fmt.Sprintf("create dataset %q in workspace %s (mode %s, retention %s) with tables %s",
			a.Dataset.Name, workspaceName(a.WorkspaceID), a.Dataset.DefaultMode, a.Retention, strings.Join(names, ", "))
	case UpdateTable:
		var parts []string
		if len(a.Added) > 0 {
			parts = append(parts, "add columns "+strings.Join(a.Added, ", "))
		}
		if len(a.Dropped) > 0 {
			parts = append(parts, "drop columns "+strings.Join(a.Dropped, ", "))
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

// Options change how Plan compares.
type Options struct {
	// DropColumns removes columns the config does not name (default: keep).
	DropColumns bool
	// CreateAll creates missing datasets even for pipelines whose
	// provision.create is false (the embedded emulator starts empty).
	CreateAll bool
}

// Plan compares the config's pipelines with what Power BI holds and returns
// the actions that would make them match. Problems that no action can fix
// (a table missing from an existing dataset, a column whose type differs)
// are returned as an error listing each, next to the actions that can be
// taken.
func Plan(ctx context.Context, api API, cfg *config.Config, opts Options) ([]Action, error) {
	var (
		actions  []Action
		problems []error
		creating = map[string]int{} // dataset key -> index in actions
	)
	for i, p := range cfg.Pipelines {
		t := p.Target
		want := TableFor(p)
		ds, err := findDataset(ctx, api, t)
		if errors.Is(err, pushapi.ErrNotFound) {
			if !p.Provision.Create && !opts.CreateAll {
				problems = append(problems, fmt.Errorf("pipelines[%d] (%s): dataset %q not found in workspace %s and provision.create is false", i, p.Name, t.DatasetName, workspaceName(t.WorkspaceID)))
				continue
			}
			key := t.WorkspaceID + "\x00" + t.DatasetName
			if j, ok := creating[key]; ok {
				actions[j].Dataset.Tables = appendTable(actions[j].Dataset.Tables, want)
				continue
			}
			creating[key] = len(actions)
			actions = append(actions, Action{
				Kind:        CreateDataset,
				WorkspaceID: t.WorkspaceID,
				Dataset:     pushapi.CreateDatasetRequest{Name: t.DatasetName, DefaultMode: p.Provision.Mode, Tables: []pushapi.Table{want}},
				Retention:   p.Provision.Retention,
			})
			continue
		}
		if err != nil {
			problems = append(problems, fmt.Errorf("pipelines[%d] (%s): %w", i, p.Name, err))
			continue
		}
		tables, err := api.GetTables(ctx, t.WorkspaceID, ds.ID)
		if err != nil {
			problems = append(problems, fmt.Errorf("pipelines[%d] (%s): %w", i, p.Name, err))
			continue
		}
		var have *pushapi.Table
		for k := range tables {
			if tables[k].Name == want.Name {
				have = &tables[k]
			}
		}
		if have == nil {
			problems = append(problems, fmt.Errorf("pipelines[%d] (%s): dataset %s has no table %q, and Power BI cannot add a table to an existing push dataset: create a new dataset (set dataset_name to a new name with provision.create: true)", i, p.Name, ds.ID, want.Name))
			continue
		}
		a, diffProblems := diffTable(*have, want, opts.DropColumns)
		for _, dp := range diffProblems {
			problems = append(problems, fmt.Errorf("pipelines[%d] (%s): %s", i, p.Name, dp))
		}
		if a != nil {
			a.WorkspaceID, a.DatasetID = t.WorkspaceID, ds.ID
			actions = append(actions, *a)
		}
	}
	return actions, errors.Join(problems...)
}

func appendTable(tables []pushapi.Table, t pushapi.Table) []pushapi.Table {
	for _, have := range tables {
		if have.Name == t.Name {
			return tables
		}
	}
	return append(tables, t)
}

func findDataset(ctx context.Context, api API, t pushapi.Target) (pushapi.Dataset, error) {
	if t.DatasetID != "" {
		return api.GetDataset(ctx, t.WorkspaceID, t.DatasetID)
	}
	return api.FindDatasetByName(ctx, t.WorkspaceID, t.DatasetName)
}

// diffTable returns the PutTable that adds want's missing columns (and drops
// the extra ones when drop is set), or nil when nothing changes, and the
// differences no PutTable may fix silently (a changed type).
func diffTable(have, want pushapi.Table, drop bool) (*Action, []string) {
	var problems []string
	haveCols := map[string]pushapi.Column{}
	for _, c := range have.Columns {
		haveCols[c.Name] = c
	}
	wantNames := map[string]bool{}
	next := pushapi.Table{Name: have.Name}
	var added, dropped []string
	for _, c := range want.Columns {
		wantNames[c.Name] = true
		if hc, ok := haveCols[c.Name]; ok {
			ht, _ := schema.CanonicalType(hc.DataType)
			if ht != c.DataType {
				problems = append(problems, fmt.Sprintf("table %q column %q is %s in Power BI but %s in the config", have.Name, c.Name, hc.DataType, c.DataType))
			}
			continue
		}
		added = append(added, c.Name)
	}
	// Keep the existing columns first, in their order, then the new ones.
	for _, c := range have.Columns {
		if !wantNames[c.Name] && drop {
			dropped = append(dropped, c.Name)
			continue
		}
		next.Columns = append(next.Columns, c)
	}
	for _, c := range want.Columns {
		if _, ok := haveCols[c.Name]; !ok {
			next.Columns = append(next.Columns, c)
		}
	}
	if len(added) == 0 && len(dropped) == 0 {
		return nil, problems
	}
	return &Action{Kind: UpdateTable, Table: next, Added: added, Dropped: dropped}, problems
}

// TableFor is the Power BI table a pipeline's schema describes.
func TableFor(p config.Pipeline) pushapi.Table {
	t := pushapi.Table{Name: p.Target.Table}
	for _, c := range p.Schema.Columns {
		typ, ok := schema.CanonicalType(c.Type)
		if !ok {
			typ = c.Type
		}
		t.Columns = append(t.Columns, pushapi.Column{Name: c.Name, DataType: typ})
	}
	return t
}

// Apply carries out the actions in order and returns the datasets it
// created, by name.
func Apply(ctx context.Context, api API, actions []Action) (map[string]pushapi.Dataset, error) {
	created := map[string]pushapi.Dataset{}
	for _, a := range actions {
		switch a.Kind {
		case CreateDataset:
			ds, err := api.CreateDataset(ctx, a.WorkspaceID, a.Dataset, a.Retention)
			if err != nil {
				return created, err
			}
			created[a.Dataset.Name] = ds
		case UpdateTable:
			if err := api.PutTable(ctx, a.WorkspaceID, a.DatasetID, a.Table); err != nil {
				return created, err
			}
		default:
			return created, fmt.Errorf("provision: unknown action %q", a.Kind)
		}
	}
	return created, nil
}
