package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pushd/pushd/internal/emulator"
	"github.com/pushd/pushd/internal/logtest"
)

// scrape returns the value of every sample on the endpoint, keyed by
// name{label="value",...} with labels in the exposition's order.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := name + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[key+"_count"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// sum adds the samples of a metric whose labels contain every given pair.
func sum(samples map[string]float64, name string, labels ...string) (float64, bool) {
	total, found := 0.0, false
	for k, v := range samples {
		if !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(k, l)
		}
		if ok {
			total += v
			found = true
		}
	}
	return total, found
}

func TestMetricsHealthAndNoSecretsDuringARun(t *testing.T) {
	emu, ca := testEmulator(t, nil)
	id := createTelemetryDataset(t, emu, "Int64")
	dl := filepath.Join(t.TempDir(), "dl.ndjson")
	cfg := loadConfig(t, powerbiSection(emu, ca)+stdinPipeline("    batch: {max_rows: 100, linger: 20ms}", dl))

	logs := &logtest.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	pr, pw := io.Pipe()
	ready := make(chan *Daemon, 1)
	done := make(chan error, 1)
	go func() {
		_, err := Run(context.Background(), Options{Config: cfg, Stdin: pr, Logger: logger, Ready: func(d *Daemon) { ready <- d }})
		done <- err
	}()
	d := <-ready

	const n = 250
	events := sampleEvents(t, n)
	if _, err := pw.Write(events); err != nil {
		t.Fatal(err)
	}
	if _, err := pw.Write([]byte("{\"device\":{}}\n")); err != nil { // no id, ts, seq: dead-lettered
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for emu.RowCount(id, "Telemetry") < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d rows landed", emu.RowCount(id, "Telemetry"), n)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The emulator counts a row when it answers; the client counts it when it
	// has read that answer. Wait for the client's side too before checking.
	var samples map[string]float64
	waitFor(t, "the client to count every row and the dead letter", func() bool {
		samples = scrape(t, d.OpsAddr())
		accepted, _ := sum(samples, "pushd_powerbi_rows_accepted_total", `dataset="`+id+`"`)
		dead, _ := sum(samples, "pushd_deadletter_rows_total", `pipeline="telemetry"`)
		return accepted >= n && dead >= 1
	})
	checks := []struct {
		name   string
		labels []string
		want   func(float64) bool
		say    string
	}{
		{"pushd_pipeline_events_read_total", []string{`pipeline="telemetry"`}, func(v float64) bool { return v == n+1 }, fmt.Sprint(n + 1)},
		{"pushd_powerbi_rows_accepted_total", []string{`dataset="` + id + `"`, `table="Telemetry"`}, func(v float64) bool { return v == n }, fmt.Sprint(n)},
		{"pushd_powerbi_requests_total", []string{`code="200"`}, func(v float64) bool { return v >= 3 }, ">= 3"},
		{"pushd_deadletter_rows_total", []string{`pipeline="telemetry"`}, func(v float64) bool { return v == 1 }, "1"},
		{"pushd_powerbi_quota_requests_remaining", []string{`dataset="` + id + `"`}, func(v float64) bool { return v >= 0 && v <= 120 }, "0..120"},
		{"pushd_powerbi_quota_rows_remaining", []string{`dataset="` + id + `"`}, func(v float64) bool { return v <= 1_000_000-n && v >= 0 }, "<= 1e6 - rows sent"},
		{"pushd_powerbi_requests_in_flight", nil, func(v float64) bool { return v >= 0 && v <= 5 }, "0..5"},
		{"pushd_auth_token_renewals_total", nil, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"pushd_powerbi_request_duration_seconds_count", nil, func(v float64) bool { return v >= 3 }, ">= 3"},
		{"pushd_powerbi_batch_rows_count", nil, func(v float64) bool { return v >= 3 }, ">= 3"},
		{"pushd_powerbi_dataset_info", []string{`dataset="` + id + `"`, `name="IoT Telemetry"`, `workspace="` + testWorkspace + `"`}, func(v float64) bool { return v == 1 }, "1"},
		{"go_memstats_heap_inuse_bytes", nil, func(v float64) bool { return v > 0 }, "> 0"},
	}
	for _, c := range checks {
		v, ok := sum(samples, strings.TrimSuffix(c.name, "_count"), c.labels...)
		if strings.HasSuffix(c.name, "_count") {
			v, ok = 0, false
			for k, s := range samples {
				if strings.HasPrefix(k, strings.TrimSuffix(c.name, "_count")+"{") && strings.HasSuffix(k, "_count") {
					v, ok = v+s, true
				}
			}
		}
		if !ok || !c.want(v) {
			t.Errorf("%s%v = %v (found %v), want %s", c.name, c.labels, v, ok, c.say)
		}
	}

	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		resp, err := http.Get("http://" + d.OpsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d %s, want %d", path, resp.StatusCode, body, want)
		}
		if path == "/readyz" {
			var r struct {
				Ready  bool
				Checks []struct{ Name string }
			}
			if err := json.Unmarshal(body, &r); err != nil || !r.Ready || len(r.Checks) < 3 {
				t.Errorf("/readyz body %s: want ready with token, dataset and source checks", body)
			}
		}
	}

	pw.Close()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The secret never shows: not in logs (at debug level), not in metrics.
	all := logs.String() + fmt.Sprint(samples)
	if strings.Contains(all, emulator.DefaultClientSecret) {
		t.Errorf("the client secret appears in logs or metrics")
	}
	if !strings.Contains(logs.String(), `"pipeline":"telemetry"`) {
		t.Errorf("logs carry no pipeline attribute; the test saw no logs at all?\n%s", logs.String())
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Count(line, `"pipeline":`) > 1 {
			t.Errorf("log line carries the pipeline attribute twice: %s", line)
		}
	}
}
