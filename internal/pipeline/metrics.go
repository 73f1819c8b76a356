package pipeline

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the pipeline's Prometheus series. A nil *Metrics records
// nothing.
type Metrics struct {
	eventsRead      *prometheus.CounterVec
	deadLetteredVec *prometheus.CounterVec
}

// NewMetrics registers the pipeline series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		eventsRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_pipeline_events_read_total",
			Help: "Events read from the source.",
		}, []string{"pipeline"}),
		deadLetteredVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_pipeline_dead_lettered_total",
			Help: "Events, objects or rows written to the dead letter, by kind (source, mapping, rejected) and reason (the rule broken).",
		}, []string{"pipeline", "kind", "reason"}),
	}
	reg.MustRegister(m.eventsRead, m.deadLetteredVec)
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

func (m *Metrics) deadLettered(pipeline, kind, reason string) {
	if m == nil {
		return
	}
	m.deadLetteredVec.WithLabelValues(pipeline, kind, reason).Inc()
}
