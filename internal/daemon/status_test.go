package daemon

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushd/pushd/internal/config"
	"github.com/pushd/pushd/internal/pushapi"
	"github.com/pushd/pushd/internal/source"
)

// TestStatusGivesEachPipelineItsSeries: series labelled with a pipeline's
// name, its dataset id or its group go to that pipeline, whatever their
// name (so metrics added later appear without code changes); other pushd_*
// series go to Metrics; other prefixes are left out.
func TestStatusGivesEachPipelineItsSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	gauge := func(name string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: name + " help"}, labels)
		reg.MustRegister(g)
		return g
	}
	gauge("pushd_powerbi_quota_share_ratio", "dataset").WithLabelValues("DS-A").Set(0.5)
	gauge("pushd_powerbi_quota_share_ratio_other", "dataset").WithLabelValues("ds-unknown").Set(1)
	gauge("pushd_reduce_active", "pipeline", "mode").WithLabelValues("b", "latest").Set(1)
	gauge("pushd_pipeline_freshness_seconds", "pipeline").WithLabelValues("a").Set(3)
	gauge("pushd_http_ingest_unacked_events").WithLabelValues().Set(7)
	es := gauge("pushd_eventstream_messages_total", "target", "result")
	es.WithLabelValues("a/fabric", "ok").Set(12)
	es.WithLabelValues("ab/fabric", "ok").Set(13)
	lag := gauge("pushd_kafka_lag_messages", "group", "topic", "partition")
	lag.WithLabelValues("g1", "events", "0").Set(5)
	lag.WithLabelValues("g2", "events", "0").Set(9)
	gauge("go_something").WithLabelValues().Set(1)
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pushd_powerbi_batch_rows", Buckets: []float64{10}}, []string{"dataset", "table"})
	reg.MustRegister(h)
	h.WithLabelValues("ds-b", "T").Observe(4)
	h.WithLabelValues("ds-b", "T").Observe(6)

	d := &Daemon{cfg: &config.Config{Metrics: config.Metrics{Path: "/m"}}, reg: reg, recent: newRecentDeadLetters(),
		pipelines: []*running{
			{cfg: config.Pipeline{Name: "a"}, target: pushapi.Target{DatasetID: "ds-a", Table: "T"}},
			{cfg: config.Pipeline{Name: "b", Source: source.Config{Type: source.TypeKafka, Kafka: source.KafkaConfig{GroupID: "g1"}}},
				target: pushapi.Target{DatasetID: "ds-b", Table: "T"}},
		}}
	if st := d.status(); len(st.Pipelines) != 0 {
		t.Fatalf("before the pipelines are built the page shows %d", len(st.Pipelines))
	}
	d.built.Store(true)
	d.recent.add("b", DeadLetterNote{Kind: "mapping", Field: "x", Message: strings.Repeat("é", recentMessageBytes)})

	srv := httptest.NewServer(http.HandlerFunc(d.serveStatus))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	names := func(fs []MetricFamily) string {
		var out []string
		for _, f := range fs {
			for _, s := range f.Series {
				out = append(out, fmt.Sprintf("%s=%v/%d", f.Name, s.Value, s.Count))
			}
		}
		return strings.Join(out, " ")
	}
	for _, tc := range []struct{ what, got, want string }{
		{"pipeline a", names(st.Pipelines[0].Metrics), "pushd_eventstream_messages_total=12/0 pushd_pipeline_freshness_seconds=3/0 pushd_powerbi_quota_share_ratio=0.5/0"},
		{"pipeline b", names(st.Pipelines[1].Metrics), "pushd_kafka_lag_messages=5/0 pushd_powerbi_batch_rows=10/2 pushd_reduce_active=1/0"},
		{"other", names(st.Metrics), "pushd_eventstream_messages_total=13/0 pushd_http_ingest_unacked_events=7/0 pushd_kafka_lag_messages=9/0 pushd_powerbi_quota_share_ratio_other=1/0"},
		{"metrics path", st.MetricsPath, "/m"},
		{"dead letters of a", fmt.Sprint(len(st.Pipelines[0].DeadLetters), st.Pipelines[0].DeadLettersTotal), "0 0"},
		{"dead letters of b", fmt.Sprint(len(st.Pipelines[1].DeadLetters), st.Pipelines[1].DeadLettersTotal), "1 1"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.what, tc.got, tc.want)
		}
	}
	if m := st.Pipelines[1].DeadLetters[0].Message; len(m) > recentMessageBytes+len("…") || !strings.HasSuffix(m, "…") || !json.Valid([]byte(fmt.Sprintf("%q", m))) {
		t.Errorf("long message kept as %d bytes: %q", len(m), m)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
}

// TestRecentDeadLettersAreBounded: a pipeline keeps its newest
// recentDeadLetterCount dead letters, newest first, and counts them all.
func TestRecentDeadLettersAreBounded(t *testing.T) {
	r := newRecentDeadLetters()
	for i := range 3 * recentDeadLetterCount {
		r.add("p", DeadLetterNote{Position: fmt.Sprint(i)})
	}
	r.add("q", DeadLetterNote{Position: "other"})
	l, total := r.list("p")
	if len(l) != recentDeadLetterCount || total != 3*recentDeadLetterCount ||
		l[0].Position != fmt.Sprint(3*recentDeadLetterCount-1) || l[len(l)-1].Position != fmt.Sprint(2*recentDeadLetterCount) {
		t.Fatalf("kept %d of %d: newest %s, oldest %s", len(l), total, l[0].Position, l[len(l)-1].Position)
	}
	if l, total := r.list("none"); len(l) != 0 || total != 0 {
		t.Fatalf("a pipeline without dead letters: %v %d", l, total)
	}
}

// TestRateHistoryTurnsSamplesIntoRates: rates are the counter increase over
// the time between samples, the first sample gives none, and only the last
// rateSeconds are kept.
func TestRateHistoryTurnsSamplesIntoRates(t *testing.T) {
	h := newRateHistory()
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	h.sample("p", at, 100, 50)
	if l := h.list("p"); len(l) != 0 {
		t.Fatalf("one sample gave %v", l)
	}
	h.sample("p", at.Add(2*time.Second), 300, 50)
	h.sample("p", at.Add(2*time.Second), 400, 60) // no time passed: no rate
	h.sample("p", at.Add(3*time.Second), 400, 160)
	l := h.list("p")
	if len(l) != 2 || l[0].EventsIn != 100 || l[0].RowsOut != 0 || l[1].EventsIn != 0 || l[1].RowsOut != 100 {
		t.Fatalf("rates = %+v", l)
	}
	for i := range 2 * rateSeconds {
		h.sample("p", at.Add(time.Duration(4+i)*time.Second), 400, 160+int64(i))
	}
	if l := h.list("p"); len(l) != rateSeconds || l[len(l)-1].RowsOut != 1 || !l[len(l)-1].At.Equal(at.Add(time.Duration(3+2*rateSeconds)*time.Second)) {
		t.Fatalf("kept %d rates, last %+v", len(l), l[len(l)-1])
	}
}
