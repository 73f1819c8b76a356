package daemon

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/provision/provisiontest"
	"github.com/pushd/pushd/internal/pushapi"
)

// TestDatasetInfo: the info series names the dataset, asking Power BI for
// the name when the config gives only the id, and falling back to the id.
func TestDatasetInfo(t *testing.T) {
	env := provisiontest.Start(t)
	id := env.CreateDataset(t, "Push", "Plant Floor", "Readings", "DeviceId", "String")
	cfg, err := config.Load(env.WriteConfig(t, "info.yaml", provisiontest.Pipeline("p", "Plant Floor", "Readings", false, "{name: DeviceId, type: String}")))
	if err != nil {
		t.Fatal(err)
	}
	client := provisiontest.Client(t, cfg)
	reg := prometheus.NewRegistry()
	info := newDatasetInfo(reg)
	log := slog.New(slog.DiscardHandler)
	ws := provisiontest.Workspace
	info.set(context.Background(), client, pushapi.Target{WorkspaceID: ws, DatasetID: id, Table: "Readings"}, log)
	info.set(context.Background(), client, pushapi.Target{WorkspaceID: ws, DatasetID: "9d2b0c3e-0000-4000-8000-000000000000", Table: "Readings"}, log)
	want := `
# HELP pushd_powerbi_dataset_info 1 for each target dataset, with its id (dataset), name and workspace: join on dataset to show names.
# TYPE pushd_powerbi_dataset_info gauge
pushd_powerbi_dataset_info{dataset="9d2b0c3e-0000-4000-8000-000000000000",name="9d2b0c3e-0000-4000-8000-000000000000",workspace="` + ws + `"} 1
pushd_powerbi_dataset_info{dataset="` + id + `",name="Plant Floor",workspace="` + ws + `"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "pushd_powerbi_dataset_info"); err != nil {
		t.Error(err)
	}
}
