package daemon

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushd/pushd/internal/pushapi"
)

// datasetInfo is pushd_powerbi_dataset_info: every other series names a
// dataset by id, which no person recognises; this one joins the id to the
// dataset's name and workspace (PromQL: `* on(dataset) group_left(name)
// pushd_powerbi_dataset_info`), the usual Prometheus info-metric pattern.
type datasetInfo struct{ gauge *prometheus.GaugeVec }

func newDatasetInfo(reg prometheus.Registerer) datasetInfo {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pushd_powerbi_dataset_info",
		Help: "1 for each target dataset, with its id (dataset), name and workspace: join on dataset to show names.",
	}, []string{"dataset", "name", "workspace"})
	reg.MustRegister(g)
	return datasetInfo{gauge: g}
}

// set records t's dataset. When the config names the dataset by id only,
// its name is asked from Power BI once; if that fails, the id stands in.
func (i datasetInfo) set(ctx context.Context, client *pushapi.Client, t pushapi.Target, log *slog.Logger) {
	name := t.DatasetName
	if name == "" {
		ds, err := client.GetDataset(ctx, t.WorkspaceID, t.DatasetID)
		if err != nil {
			log.Debug("dataset name not known for metrics", "dataset", t.DatasetID, "err", err)
			name = t.DatasetID
		} else {
			name = ds.Name
		}
	}
	i.gauge.WithLabelValues(t.DatasetID, name, t.WorkspaceID).Set(1)
	log.Info("dataset resolved", "dataset", t.DatasetID, "name", name, "table", t.Table)
}
