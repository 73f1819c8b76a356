package eventstream

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsForgetATarget: Forget deletes every series of one target and
// none of another's.
func TestMetricsForgetATarget(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	for _, name := range []string{"p/gone", "p/kept"} {
		tm := m.target(name)
		tm.accepted.Inc()
		tm.rejected.Inc()
		tm.failed.Inc()
		tm.bytes.Add(10)
		tm.retries.Inc()
		tm.throttled.Inc()
		tm.duration.Observe(0.01)
	}
	before := testutil.CollectAndCount(reg)
	m.Forget("p/gone")
	if after := testutil.CollectAndCount(reg); after != before/2 {
		t.Fatalf("%d series after forgetting one of two targets, want %d", after, before/2)
	}
	if v := testutil.ToFloat64(m.bytes.WithLabelValues("p/kept")); v != 10 {
		t.Fatalf("kept target's bytes = %v, want 10", v)
	}
	var nilMetrics *Metrics
	nilMetrics.Forget("x")
}
