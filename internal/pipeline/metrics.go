package pipeline

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the pipeline's Prometheus series (dead-letter counts live in
// package deadletter). A nil *Metrics records nothing.
type Metrics struct {
	eventsRead *prometheus.CounterVec

	freshness *prometheus.GaugeVec
	unacked   *prometheus.GaugeVec
	inputRate *prometheus.GaugeVec
	quotaRate *prometheus.GaugeVec

	reduceEvents *prometheus.CounterVec
	reduceRows   *prometheus.CounterVec
	reduceLate   *prometheus.CounterVec
	reduceEarly  *prometheus.CounterVec
	reduceGroups *prometheus.GaugeVec
	reduceActive *prometheus.GaugeVec
}

// NewMetrics registers the pipeline series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	pl := []string{"pipeline"}
	m := &Metrics{
		eventsRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_pipeline_events_read_total",
			Help: "Events read from the source.",
		}, pl),
		freshness: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_pipeline_freshness_seconds",
			Help: "Age of the newest accepted row's event time (reduced rows: their time column or arrival time; unreduced Kafka rows: the record timestamp), updated every second.",
		}, pl),
		unacked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_pipeline_unacked_events",
			Help: "Events read but not yet acknowledged.",
		}, pl),
		inputRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_pipeline_input_rows_per_second",
			Help: "Rows mapped per second, averaged over about 10 seconds, before any reduction.",
		}, pl),
		quotaRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_pipeline_quota_rows_per_second",
			Help: "Rows per second the target dataset's quota carries (rows per hour, and requests per minute times batch.max_rows).",
		}, pl),
		reduceEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_reduce_events_total",
			Help: "Rows folded into the reduction (events in).",
		}, pl),
		reduceRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_reduce_rows_total",
			Help: "Rows the reduction emitted (rows out).",
		}, pl),
		reduceLate: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_reduce_late_events_total",
			Help: "Rows that arrived after their window was emitted, written to the dead letter with reason late.",
		}, pl),
		reduceEarly: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_reduce_early_emissions_total",
			Help: "Windows or intervals emitted before their time because max_groups or max_unacked_events was reached.",
		}, pl),
		reduceGroups: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_reduce_open_groups",
			Help: "Groups the reduction holds open (bounded by reduce.max_groups).",
		}, pl),
		reduceActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pushd_reduce_active",
			Help: "1 while the reduction is applied, 0 while rows pass through (when: overloaded).",
		}, []string{"pipeline", "mode"}),
	}
	reg.MustRegister(m.eventsRead, m.freshness, m.unacked, m.inputRate, m.quotaRate,
		m.reduceEvents, m.reduceRows, m.reduceLate, m.reduceEarly, m.reduceGroups, m.reduceActive)
	return m
}

// Forget deletes the series of a pipeline that no longer runs (removed by
// a reload), so that its gauges do not report their last values forever.
func (m *Metrics) Forget(pipeline string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"pipeline": pipeline}
	for _, v := range []*prometheus.MetricVec{m.eventsRead.MetricVec, m.freshness.MetricVec, m.unacked.MetricVec,
		m.inputRate.MetricVec, m.quotaRate.MetricVec, m.reduceEvents.MetricVec, m.reduceRows.MetricVec,
		m.reduceLate.MetricVec, m.reduceEarly.MetricVec, m.reduceGroups.MetricVec, m.reduceActive.MetricVec} {
		v.DeletePartialMatch(l)
	}
}

// eventsCounter returns the pipeline's events-read counter, looked up once
// rather than per event.
func (m *Metrics) eventsCounter(pipeline string) prometheus.Counter {
	if m == nil {
		return nil
	}
	return m.eventsRead.WithLabelValues(pipeline)
}
