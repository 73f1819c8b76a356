package pushapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Dataset is a Power BI dataset (swagger definition Dataset; the fields push
// datasets use). Unknown fields in answers are ignored.
type Dataset struct {
	ID                               string `json:"id"`
	Name                             string `json:"name"`
	AddRowsAPIEnabled                bool   `json:"addRowsAPIEnabled"`
	ConfiguredBy                     string `json:"configuredBy,omitempty"`
	IsRefreshable                    bool   `json:"isRefreshable"`
	IsEffectiveIdentityRequired      bool   `json:"isEffectiveIdentityRequired"`
	IsEffectiveIdentityRolesRequired bool   `json:"isEffectiveIdentityRolesRequired"`
	IsOnPremGatewayRequired          bool   `json:"isOnPremGatewayRequired"`
	TargetStorageMode                string `json:"targetStorageMode,omitempty"`
	WebURL                           string `json:"webUrl,omitempty"`
	CreatedDate                      string `json:"createdDate,omitempty"`
	Description                      string `json:"description,omitempty"`
	// DefaultRetentionPolicy appears in the create answer ("None" or
	// "basicFIFO") although the spec does not declare it; the client's
	// limiter takes it from any answer that carries it.
	DefaultRetentionPolicy string `json:"defaultRetentionPolicy,omitempty"`
}

// Table is a dataset table (swagger definition Table).
type Table struct {
	Name        string    `json:"name"`
	Columns     []Column  `json:"columns"`
	Measures    []Measure `json:"measures,omitempty"`
	IsHidden    bool      `json:"isHidden,omitempty"`
	Description string    `json:"description,omitempty"`
}

// Column is a table column (swagger definition Column). DataType is one of
// Int64, Double, Boolean, DateTime, String, Decimal.
type Column struct {
	Name         string `json:"name"`
	DataType     string `json:"dataType"`
	FormatString string `json:"formatString,omitempty"`
	SortByColumn string `json:"sortByColumn,omitempty"`
	DataCategory string `json:"dataCategory,omitempty"`
	IsHidden     bool   `json:"isHidden,omitempty"`
	SummarizeBy  string `json:"summarizeBy,omitempty"`
}

// Measure is a DAX measure of a table (swagger definition Measure).
type Measure struct {
	Name         string `json:"name"`
	Expression   string `json:"expression"`
	FormatString string `json:"formatString,omitempty"`
	Description  string `json:"description,omitempty"`
	IsHidden     bool   `json:"isHidden,omitempty"`
}

// Relationship links two tables (swagger definition Relationship).
type Relationship struct {
	Name                   string `json:"name"`
	FromTable              string `json:"fromTable"`
	FromColumn             string `json:"fromColumn"`
	ToTable                string `json:"toTable"`
	ToColumn               string `json:"toColumn"`
	CrossFilteringBehavior string `json:"crossFilteringBehavior,omitempty"`
}

// Dataset modes (CreateDatasetRequest.DefaultMode).
const (
	ModePush          = "Push"
	ModeStreaming     = "Streaming"
	ModePushStreaming = "PushStreaming"
)

// Retention policies for CreateDataset.
const (
	RetentionNone      = "None"
	RetentionBasicFIFO = "basicFIFO"
)

// CreateDatasetRequest is the body of a dataset creation (swagger definition
// CreateDatasetRequest).
type CreateDatasetRequest struct {
	Name          string         `json:"name"`
	DefaultMode   string         `json:"defaultMode,omitempty"`
	Tables        []Table        `json:"tables"`
	Relationships []Relationship `json:"relationships,omitempty"`
}

// ListDatasets returns the datasets of a workspace ("" = My workspace).
func (c *Client) ListDatasets(ctx context.Context, workspaceID string) ([]Dataset, error) {
	var out struct {
		Value []Dataset `json:"value"`
	}
	cl := &call{op: "GetDatasets", method: http.MethodGet, url: c.datasetsURL(workspaceID), out: &out}
	if err := c.do(ctx, cl); err != nil {
		return nil, fmt.Errorf("listing datasets of workspace %q: %w", workspaceID, err)
	}
	for _, d := range out.Value {
		c.learnRetention(d.ID, d.DefaultRetentionPolicy)
	}
	return out.Value, nil
}

// GetDataset returns one dataset.
func (c *Client) GetDataset(ctx context.Context, workspaceID, datasetID string) (Dataset, error) {
	var out Dataset
	cl := &call{op: "GetDataset", method: http.MethodGet, url: c.datasetURL(workspaceID, datasetID), dataset: datasetID, out: &out}
	if err := c.do(ctx, cl); err != nil {
		return Dataset{}, fmt.Errorf("getting dataset %s: %w", datasetID, err)
	}
	c.learnRetention(out.ID, out.DefaultRetentionPolicy)
	return out, nil
}

// FindDatasetByName returns the workspace's dataset called name (exact,
// case-sensitive match). It wraps ErrNotFound when there is none, and fails
// when several share the name (the config must then name it by id).
func (c *Client) FindDatasetByName(ctx context.Context, workspaceID, name string) (Dataset, error) {
	all, err := c.ListDatasets(ctx, workspaceID)
	if err != nil {
		return Dataset{}, err
	}
	var found []Dataset
	for _, d := range all {
		if d.Name == name {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return Dataset{}, fmt.Errorf("dataset %q in workspace %q: %w", name, workspaceID, ErrNotFound)
	case 1:
		return found[0], nil
	}
	ids := make([]string, len(found))
	for i, d := range found {
		ids[i] = d.ID
	}
	return Dataset{}, fmt.Errorf("dataset name %q in workspace %q is ambiguous (ids %s): set dataset_id", name, workspaceID, strings.Join(ids, ", "))
}

// ResolveTarget fills t.DatasetID from t.DatasetName when the id is empty.
func (c *Client) ResolveTarget(ctx context.Context, t Target) (Target, error) {
	if t.DatasetID != "" {
		return t, nil
	}
	if t.DatasetName == "" {
		return t, fmt.Errorf("target of table %q: dataset_id or dataset_name required", t.Table)
	}
	d, err := c.FindDatasetByName(ctx, t.WorkspaceID, t.DatasetName)
	if err != nil {
		return t, err
	}
	t.DatasetID = d.ID
	return t, nil
}

// ErrCreationRetired marks (wrapped, with the *APIError) a dataset creation
// Power BI refused with FeatureDeprecatedError: Microsoft retired the
// creation of real-time (push) semantic models (announced for after 31
// October 2027). Its text says what to do.
var ErrCreationRetired = errors.New("push datasets can no longer be created (FeatureDeprecatedError: Microsoft retired the creation of real-time semantic models; existing ones keep working): bind the pipeline to an existing push dataset (target.dataset_id or the dataset_name of one made before, with provision.create: false), or send the events to a Microsoft Fabric eventstream")

// CreateDataset creates a dataset in a workspace ("" = My workspace) with
// the retention policy ("" leaves Power BI's default, None; else None or
// basicFIFO). Power BI accepts new push datasets only until 2027-10-31.
func (c *Client) CreateDataset(ctx context.Context, workspaceID string, req CreateDatasetRequest, retention string) (Dataset, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return Dataset{}, fmt.Errorf("encoding dataset %q: %w", req.Name, err)
	}
	u := c.datasetsURL(workspaceID)
	if retention != "" {
		u += "?defaultRetentionPolicy=" + url.QueryEscape(retention)
	}
	var out Dataset
	cl := &call{op: "PostDataset", method: http.MethodPost, url: u, body: body, out: &out}
	if err := c.do(ctx, cl); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Code == "FeatureDeprecatedError" {
			return Dataset{}, fmt.Errorf("creating dataset %q in workspace %q: %w: %w", req.Name, workspaceID, ErrCreationRetired, err)
		}
		return Dataset{}, fmt.Errorf("creating dataset %q in workspace %q: %w", req.Name, workspaceID, err)
	}
	c.learnRetention(out.ID, out.DefaultRetentionPolicy)
	return out, nil
}

// DeleteDataset deletes a dataset and its rows.
func (c *Client) DeleteDataset(ctx context.Context, workspaceID, datasetID string) error {
	cl := &call{op: "DeleteDataset", method: http.MethodDelete, url: c.datasetURL(workspaceID, datasetID), dataset: datasetID}
	if err := c.do(ctx, cl); err != nil {
		return fmt.Errorf("deleting dataset %s: %w", datasetID, err)
	}
	return nil
}

// GetTables returns a push dataset's tables with their columns.
func (c *Client) GetTables(ctx context.Context, workspaceID, datasetID string) ([]Table, error) {
	var out struct {
		Value []Table `json:"value"`
	}
	cl := &call{op: "GetTables", method: http.MethodGet, url: c.datasetURL(workspaceID, datasetID) + "/tables", dataset: datasetID, out: &out}
	if err := c.do(ctx, cl); err != nil {
		return nil, fmt.Errorf("getting tables of dataset %s: %w", datasetID, err)
	}
	return out.Value, nil
}

// PutTable replaces a table's schema with t (all columns, existing and new;
// Power BI drops the columns left out).
func (c *Client) PutTable(ctx context.Context, workspaceID, datasetID string, t Table) error {
	body, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encoding table %q: %w", t.Name, err)
	}
	cl := &call{op: "PutTable", method: http.MethodPut, url: c.tableURL(workspaceID, datasetID, t.Name), body: body, dataset: datasetID, table: t.Name}
	if err := c.do(ctx, cl); err != nil {
		return fmt.Errorf("updating table %q of dataset %s: %w", t.Name, datasetID, err)
	}
	return nil
}

// DeleteRows deletes every row of a table (and resets its count for the
// 250,000-row rule).
func (c *Client) DeleteRows(ctx context.Context, workspaceID, datasetID, table string) error {
	cl := &call{op: "DeleteRows", method: http.MethodDelete, url: c.tableURL(workspaceID, datasetID, table) + "/rows", dataset: datasetID, table: table}
	if err := c.do(ctx, cl); err != nil {
		return fmt.Errorf("deleting rows of table %q of dataset %s: %w", table, datasetID, err)
	}
	c.limiter(datasetID).resetTable(table)
	return nil
}
