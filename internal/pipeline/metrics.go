package pipeline

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the pipeline's Prometheus series (dead-letter counts live in
// package deadletter). A nil *Metrics records nothing.
type Metrics struct {
	eventsRead *prometheus.CounterVec
}

// NewMetrics registers the pipeline series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		eventsRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_pipeline_events_read_total",
			Help: "Events read from the source.",
		}, []string{"pipeline"}),
	}
	reg.MustRegister(m.eventsRead)
	return m
}

// eventsCounter returns the pipeline's events-read counter, looked up once
// rather than per event.
func (m *Metrics) eventsCounter(pipeline string) prometheus.Counter {
	if m == nil {
		return nil
	}
	return m.eventsRead.WithLabelValues(pipeline)
}
