package pushapi

import (
	"context"
	"encoding/json"
)

// Target names the table that rows go to. WorkspaceID empty means
// "My workspace" (which service principals cannot use).
type Target struct {
	WorkspaceID string `yaml:"workspace_id"`
	DatasetID   string `yaml:"dataset_id"`
	// DatasetName is resolved to DatasetID at start when DatasetID is empty.
	DatasetName string `yaml:"dataset_name"`
	Table       string `yaml:"table"`
}

// Sender posts rows to a table. The batcher and pipeline consume it; Client
// implements it.
type Sender interface {
	PostRows(ctx context.Context, t Target, rows []json.RawMessage) error
}
