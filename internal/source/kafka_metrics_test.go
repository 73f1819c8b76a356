package source

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestKafkaMetricsForgetAGroup: Forget deletes every series of one group,
// per-partition gauges included, and none of another group's.
func TestKafkaMetricsForgetAGroup(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewKafkaMetrics(reg)
	for _, g := range []string{"gone", "kept"} {
		m.messages.WithLabelValues(g, "t").Add(3)
		m.ackErrors.WithLabelValues(g, "t").Inc()
		m.fetchErrors.WithLabelValues(g).Inc()
		m.commits.WithLabelValues(g).Inc()
		m.commitErrors.WithLabelValues(g).Inc()
		m.unacked.WithLabelValues(g).Set(5)
		m.committed.WithLabelValues(g, "t", "0").Set(7)
		m.lag.WithLabelValues(g, "t", "1").Set(9)
	}
	before := testutil.CollectAndCount(reg)
	m.Forget("gone")
	if after := testutil.CollectAndCount(reg); after != before/2 {
		t.Fatalf("%d series after forgetting one of two groups, want %d", after, before/2)
	}
	if v := testutil.ToFloat64(m.lag.WithLabelValues("kept", "t", "1")); v != 9 {
		t.Fatalf("kept group's lag = %v, want 9", v)
	}
	var nilMetrics *KafkaMetrics
	nilMetrics.Forget("x") // records nothing, panics never
}
