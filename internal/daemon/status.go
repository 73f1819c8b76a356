package daemon

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/pushd/pushd/internal/source"
	"github.com/pushd/pushd/internal/webui"
)

//go:embed page
var pageFiles embed.FS

// Status is what pushd's status page shows (GET /status.json on the
// metrics address): per pipeline its source, target, counts, the metric
// series that name it (by pipeline, dataset or consumer group label) and
// its latest dead letters; plus every other pushd_* series. Metrics that
// other parts of pushd register appear here without code changes.
type Status struct {
	Now time.Time `json:"now"`
	// MetricsPath is where the Prometheus metrics are served.
	MetricsPath string           `json:"metrics_path"`
	Pipelines   []PipelineStatus `json:"pipelines"`
	// Metrics are the pushd_* series that name no pipeline, dataset or
	// group of a pipeline (the HTTP ingest and auth series, for example).
	Metrics []MetricFamily `json:"metrics"`
}

// PipelineStatus is one pipeline on the status page.
type PipelineStatus struct {
	Name        string           `json:"name"`
	Source      SourceStatus     `json:"source"`
	Target      TargetStatus     `json:"target"`
	Counts      PipelineCounts   `json:"counts"`
	DeadLetters []DeadLetterNote `json:"dead_letters"`
	// DeadLettersTotal counts every dead letter of the run.
	DeadLettersTotal int64 `json:"dead_letters_total"`
	// Rates are the events read and rows accepted per second, once a
	// second over the last rateSeconds, oldest first.
	Rates   []Rate         `json:"rates"`
	Metrics []MetricFamily `json:"metrics"`
}

// SourceStatus says where a source is: the lines (events) read from stdin;
// the Kafka topics and consumer group (the per-partition lag and committed
// offsets are in the pipeline's metrics).
type SourceStatus struct {
	Type   string   `json:"type"`
	Topics []string `json:"topics,omitempty"`
	Group  string   `json:"group,omitempty"`
	Listen string   `json:"listen,omitempty"`
	// Read counts the events read so far (for stdin: the lines).
	Read int64 `json:"read"`
}

// TargetStatus is the pipeline's Power BI table.
type TargetStatus struct {
	Dataset   string `json:"dataset,omitempty"`
	DatasetID string `json:"dataset_id"`
	Workspace string `json:"workspace,omitempty"`
	Table     string `json:"table"`
}

// PipelineCounts are the pipeline's counts so far (pipeline.Summary).
type PipelineCounts struct {
	EventsRead         int64 `json:"events_read"`
	RowsMapped         int64 `json:"rows_mapped"`
	RowsAccepted       int64 `json:"rows_accepted"`
	RowsDeadLettered   int64 `json:"rows_dead_lettered"`
	EventsDeadLettered int64 `json:"events_dead_lettered"`
	Requests           int64 `json:"requests"`
	EventsFailed       int64 `json:"events_failed"`
	EventsAcked        int64 `json:"events_acked"`
	BatchesSplit       int64 `json:"batches_split"`
}

// MetricFamily is one Prometheus metric with its series.
type MetricFamily struct {
	Name   string   `json:"name"`
	Help   string   `json:"help"`
	Type   string   `json:"type"`
	Series []Series `json:"series"`
}

// Series is one labelled value; for histograms and summaries Value is the
// sum and Count the number of observations.
type Series struct {
	Labels map[string]string `json:"labels,omitempty"`
	Value  float64           `json:"value"`
	Count  uint64            `json:"count,omitempty"`
}

// status gathers the page's view now.
func (d *Daemon) status() Status {
	st := Status{Now: time.Now(), MetricsPath: d.cfg.Metrics.Path, Pipelines: []PipelineStatus{}}
	if !d.built.Load() {
		return st // starting: the pipelines are being built
	}
	pipelines := d.list()
	for _, r := range pipelines {
		st.Pipelines = append(st.Pipelines, d.pipelineStatus(r))
	}
	families, _ := d.reg.Gather() // a partial gather still shows what it has
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "pushd_") {
			continue
		}
		byPipeline := make([]MetricFamily, len(pipelines))
		other := MetricFamily{Name: f.GetName(), Help: f.GetHelp(), Type: strings.ToLower(f.GetType().String())}
		for _, m := range f.GetMetric() {
			labels := make(map[string]string, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			s := seriesOf(f.GetType(), m, labels)
			owned := false
			for i, r := range pipelines {
				if r.owns(labels) {
					byPipeline[i].Series = append(byPipeline[i].Series, s)
					owned = true
				}
			}
			if !owned {
				other.Series = append(other.Series, s)
			}
		}
		for i, mf := range byPipeline {
			if len(mf.Series) > 0 {
				mf.Name, mf.Help, mf.Type = other.Name, other.Help, other.Type
				st.Pipelines[i].Metrics = append(st.Pipelines[i].Metrics, mf)
			}
		}
		if len(other.Series) > 0 {
			st.Metrics = append(st.Metrics, other)
		}
	}
	return st
}

// owns reports whether a series with these labels is about r: its
// pipeline, its dataset, one of its further targets or its Kafka consumer
// group.
func (r *running) owns(labels map[string]string) bool {
	if v, ok := labels["pipeline"]; ok {
		return v == r.cfg.Name
	}
	if v, ok := labels["dataset"]; ok && r.target.DatasetID != "" && strings.EqualFold(v, r.target.DatasetID) {
		return true
	}
	if v, ok := labels["target"]; ok && strings.HasPrefix(v, r.cfg.Name+"/") {
		return true // a further target of the pipeline (eventstream: "pipeline/target")
	}
	if v, ok := labels["group"]; ok && r.cfg.Source.Type == source.TypeKafka {
		return v == r.cfg.Source.Kafka.GroupID
	}
	return false
}

func seriesOf(t dto.MetricType, m *dto.Metric, labels map[string]string) Series {
	s := Series{Labels: labels}
	switch t {
	case dto.MetricType_COUNTER:
		s.Value = m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		s.Value = m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		s.Value, s.Count = m.GetHistogram().GetSampleSum(), m.GetHistogram().GetSampleCount()
	case dto.MetricType_SUMMARY:
		s.Value, s.Count = m.GetSummary().GetSampleSum(), m.GetSummary().GetSampleCount()
	default:
		s.Value = m.GetUntyped().GetValue()
	}
	return s
}

func (d *Daemon) pipelineStatus(r *running) PipelineStatus {
	ps := PipelineStatus{
		Name:   r.cfg.Name,
		Source: SourceStatus{Type: r.cfg.Source.Type},
		Target: TargetStatus{Dataset: r.cfg.Target.DatasetName, DatasetID: r.target.DatasetID, Workspace: r.target.WorkspaceID, Table: r.target.Table},
	}
	switch {
	case r.kafka != nil:
		ps.Source.Topics, ps.Source.Group = r.cfg.Source.Kafka.Topics, r.cfg.Source.Kafka.GroupID
	case r.http != nil:
		ps.Source.Listen = r.http.Addr().String()
	}
	if r.p != nil {
		s := r.p.Stats()
		ps.Counts = PipelineCounts{
			EventsRead: s.EventsRead, RowsMapped: s.RowsMapped, RowsAccepted: s.RowsAccepted,
			RowsDeadLettered: s.RowsDeadLettered, EventsDeadLettered: s.EventsDeadLettered, Requests: s.Requests,
			EventsFailed: s.EventsFailed, EventsAcked: s.EventsAcked, BatchesSplit: s.BatchesSplit,
		}
		ps.Source.Read = s.EventsRead
	}
	if in, ok := r.src.(*source.Stdin); ok {
		ps.Source.Read = in.Stats().Read
	}
	ps.DeadLetters, ps.DeadLettersTotal = d.recent.list(r.cfg.Name)
	ps.Rates = d.rates.list(r.cfg.Name)
	return ps
}

// serveStatus answers GET /status.json.
func (d *Daemon) serveStatus(w http.ResponseWriter, _ *http.Request) {
	webui.SetHeaders(w)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(d.status())
}

// statusRoutes adds the status page (GET /), its assets and its JSON.
func (d *Daemon) statusRoutes(mux *http.ServeMux) {
	assets, _ := fs.Sub(pageFiles, "page") // "page" is embedded: Sub cannot fail
	mux.HandleFunc("GET /{$}", webui.Page(pageFiles, "page/index.html"))
	mux.HandleFunc("GET /ui/{file}", webui.Assets(assets))
	mux.HandleFunc("GET /status.json", d.serveStatus)
}

// recentDeadLetters keeps the latest dead letters of each pipeline for the
// status page: a few per pipeline, so memory stays bounded.
type recentDeadLetters struct {
	mu    sync.Mutex
	by    map[string][]DeadLetterNote // newest last
	total map[string]int64
}

// DeadLetterNote is one dead letter as the status page shows it.
type DeadLetterNote struct {
	At       time.Time `json:"at"`
	Position string    `json:"position"`
	Kind     string    `json:"kind"`
	Field    string    `json:"field,omitempty"`
	Rule     string    `json:"rule,omitempty"`
	Status   int       `json:"status,omitempty"`
	Code     string    `json:"code,omitempty"`
	Message  string    `json:"message"`
}

// recentDeadLetterCount is how many dead letters per pipeline the page
// keeps; recentMessageBytes bounds each message.
const (
	recentDeadLetterCount = 20
	recentMessageBytes    = 300
)

func newRecentDeadLetters() *recentDeadLetters {
	return &recentDeadLetters{by: map[string][]DeadLetterNote{}, total: map[string]int64{}}
}

func (r *recentDeadLetters) add(pipeline string, n DeadLetterNote) {
	if len(n.Message) > recentMessageBytes {
		n.Message = strings.ToValidUTF8(n.Message[:recentMessageBytes], "") + "…"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.by[pipeline]
	if len(l) >= recentDeadLetterCount {
		l = append(l[:0], l[1:]...)
	}
	r.by[pipeline] = append(l, n)
	r.total[pipeline]++
}

// list returns the pipeline's kept dead letters, newest first, and the
// count of all of them.
func (r *recentDeadLetters) list(pipeline string) ([]DeadLetterNote, int64) {
	if r == nil {
		return nil, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l := slices.Clone(r.by[pipeline])
	slices.Reverse(l)
	return l, r.total[pipeline]
}

// Rate is one second of a pipeline's flow.
type Rate struct {
	At       time.Time `json:"at"`
	EventsIn float64   `json:"events_in"`
	RowsOut  float64   `json:"rows_out"`
}

// rateSeconds is how much rate history the status page gets.
const rateSeconds = 300

// rateHistory turns samples of each pipeline's counters into rates per
// second, keeping the last rateSeconds of them.
type rateHistory struct {
	mu    sync.Mutex
	last  map[string]rateSample
	rates map[string][]Rate // oldest first
}

type rateSample struct {
	at           time.Time
	events, rows int64
}

func newRateHistory() *rateHistory {
	return &rateHistory{last: map[string]rateSample{}, rates: map[string][]Rate{}}
}

// sample records the pipeline's counters at time at; from the second
// sample on it adds the rate since the previous one.
func (h *rateHistory) sample(pipeline string, at time.Time, events, rows int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	prev, ok := h.last[pipeline]
	h.last[pipeline] = rateSample{at: at, events: events, rows: rows}
	dt := at.Sub(prev.at).Seconds()
	if !ok || dt <= 0 {
		return
	}
	l := h.rates[pipeline]
	if len(l) >= rateSeconds {
		l = append(l[:0], l[1:]...)
	}
	h.rates[pipeline] = append(l, Rate{At: at, EventsIn: float64(max(events-prev.events, 0)) / dt, RowsOut: float64(max(rows-prev.rows, 0)) / dt})
}

func (h *rateHistory) list(pipeline string) []Rate {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.rates[pipeline])
}

// sampleRates samples every pipeline's counters once a second until stop
// is closed.
func (d *Daemon) sampleRates(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			if !d.built.Load() {
				continue
			}
			for _, r := range d.list() {
				if r.p != nil {
					s := r.p.Stats()
					d.rates.sample(r.cfg.Name, now, s.EventsRead, s.RowsAccepted)
				}
			}
		}
	}
}
