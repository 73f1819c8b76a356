package eventstream

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the eventstream targets' Prometheus series; the target label
// is the target's name (pipeline/target), a bounded set from the config. A
// nil *Metrics records nothing.
type Metrics struct {
	messages  *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	retries   *prometheus.CounterVec
	throttled *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

// NewMetrics registers the eventstream series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_eventstream_messages_total",
			Help: "Messages produced to eventstreams, by result: accepted (acknowledged by all replicas), rejected (refused for good: to the dead letter) or failed (not delivered; the events come again).",
		}, []string{"target", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_eventstream_message_bytes_total",
			Help: "Bytes of message values accepted by eventstreams.",
		}, []string{"target"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_eventstream_retries_total",
			Help: "Produce attempts retried after a throttling or transient error.",
		}, []string{"target"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushd_eventstream_throttled_total",
			Help: "Produce attempts the endpoint throttled (throttling quota exceeded or request timed out).",
		}, []string{"target"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pushd_eventstream_produce_duration_seconds",
			Help:    "Duration of one produce attempt of a batch, until all replicas acknowledged it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, []string{"target"}),
	}
	reg.MustRegister(m.messages, m.bytes, m.retries, m.throttled, m.duration)
	return m
}

// Forget deletes the series of a target that no longer runs (its pipeline
// removed by a reload).
func (m *Metrics) Forget(target string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"target": target}
	for _, v := range []*prometheus.MetricVec{m.messages.MetricVec, m.bytes.MetricVec, m.retries.MetricVec,
		m.throttled.MetricVec, m.duration.MetricVec} {
		v.DeletePartialMatch(l)
	}
}

// targetMetrics are one target's series, looked up once.
type targetMetrics struct {
	accepted, rejected, failed prometheus.Counter
	bytes, retries, throttled  prometheus.Counter
	duration                   prometheus.Observer
}

func (m *Metrics) target(name string) targetMetrics {
	if m == nil {
		discard := prometheus.NewCounter(prometheus.CounterOpts{Name: "discarded"})
		return targetMetrics{discard, discard, discard, discard, discard, discard,
			prometheus.NewHistogram(prometheus.HistogramOpts{Name: "discarded"})}
	}
	return targetMetrics{
		accepted:  m.messages.WithLabelValues(name, "accepted"),
		rejected:  m.messages.WithLabelValues(name, "rejected"),
		failed:    m.messages.WithLabelValues(name, "failed"),
		bytes:     m.bytes.WithLabelValues(name),
		retries:   m.retries.WithLabelValues(name),
		throttled: m.throttled.WithLabelValues(name),
		duration:  m.duration.WithLabelValues(name),
	}
}
