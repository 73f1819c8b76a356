package pushapi

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestWindowHeldUntilAnswered: a request sent and not answered counts in
// full and frees nothing by time; once answered it counts from its answer.
func TestWindowHeldUntilAnswered(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := newWindow(3, time.Second)
	w.hold(1)
	w.hold(1)
	if got := w.delay(t0, 1); got != 0 {
		t.Fatalf("two held of 3: delay = %v, want 0", got)
	}
	w.hold(1)
	if got := w.delay(t0.Add(time.Hour), 1); got != waitForAnswer {
		t.Fatalf("three held of 3, an hour later: delay = %v, want waitForAnswer", got)
	}
	w.answer(t0.Add(2*time.Second), 1)
	if got, want := w.delay(t0.Add(2500*time.Millisecond), 1), 500*time.Millisecond+1; got != want {
		t.Fatalf("answered at 2s: delay at 2.5s = %v, want %v (one window after the answer)", got, want)
	}
	if got := w.used(t0.Add(3 * time.Second)); got != 2 {
		t.Fatalf("used once the answered one left = %d, want 2 (the held ones)", got)
	}
}

// TestShareScalesEveryQuota: a process with share 0.5 keeps, at the server,
// to half the request quota and half the in-flight bound; raised to 1 it
// uses the whole again, and each change is logged and shown as a metric.
func TestShareScalesEveryQuota(t *testing.T) {
	tests := []struct {
		name    string
		limits  Limits
		latency time.Duration
		check   func(t *testing.T, share float64, reqs []recorded, peak int)
	}{
		{name: "requests", limits: Limits{RequestsPerMinute: 40, RequestWindow: 2 * time.Second},
			check: func(t *testing.T, share float64, reqs []recorded, _ int) {
				quota := int(40 * share)
				at, w := weights(reqs, false)
				if got := maxInWindow(at, w, 2*time.Second); got > quota {
					t.Errorf("share %v of 40: a window held %d requests, want <= %d", share, got, quota)
				}
				if n := len(reqs); n < quota*9 {
					t.Errorf("share %v of 40 per 2s over 20s: %d requests, want >= %d of %d", share, n, quota*9, quota*10)
				}
			}},
		{name: "in flight", limits: Limits{RequestsPerMinute: 6000, MaxInFlight: 5}, latency: 3 * time.Second,
			check: func(t *testing.T, share float64, _ []recorded, peak int) {
				if want := int(5 * share); peak != want {
					t.Errorf("share %v of 5 in flight: peak %d, want %d", share, peak, want)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var now, peak atomic.Int32
				s := &script{steps: []func(http.ResponseWriter, *http.Request){func(w http.ResponseWriter, r *http.Request) {
					n := now.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					time.Sleep(tt.latency)
					now.Add(-1)
					w.WriteHeader(http.StatusOK)
				}}}
				reg := prometheus.NewRegistry()
				m := NewMetrics(reg)
				var logs bytes.Buffer
				c, err := NewClient(testConfig("https://api.example"), &fakeTokens{}, &http.Client{Transport: handlerTransport{s}},
					ClientOptions{Metrics: m, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
				if err != nil {
					t.Fatal(err)
				}
				c.SetLimits("ds", tt.limits)
				tgts := []Target{{DatasetID: "ds", Table: "a"}}
				done := 0
				for _, share := range []float64{0.5, 1} {
					c.SetShare("ds", share)
					if got := testutil.ToFloat64(m.quotaShare.WithLabelValues("ds")); got != share {
						t.Errorf("pushd_powerbi_quota_share_ratio = %v, want %v", got, share)
					}
					peak.Store(0)
					runWorkers(t, c, tgts, 12, 1, 20*time.Second)
					time.Sleep(5 * time.Second) // the run's requests leave the windows
					reqs := s.requests()
					tt.check(t, share, reqs[done:], int(peak.Load()))
					done = len(reqs)
				}
				for _, want := range []string{"share=0.5 previous=1", "share=1 previous=0.5"} {
					if !strings.Contains(logs.String(), want) {
						t.Errorf("log lacks %q:\n%s", want, logs.String())
					}
				}
			})
		})
	}
}

// TestQuotaUsedRatio: pushd_powerbi_quota_used_ratio shows a backlog using
// the whole request quota and all in-flight slots, and falls to 0 once the
// window holds no request.
func TestQuotaUsedRatio(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{steps: []func(http.ResponseWriter, *http.Request){func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(100 * time.Millisecond)
			w.WriteHeader(http.StatusOK)
		}}}
		reg := prometheus.NewRegistry()
		m := NewMetrics(reg)
		c, _ := newTestClient(t, testConfig("https://api.example"), &http.Client{Transport: handlerTransport{s}}, nil, m)
		c.SetLimits("ds", Limits{RequestsPerMinute: 10, RequestWindow: 2 * time.Second, RowsPerHour: 1000, RowsWindow: 10 * time.Second, MaxInFlight: 5})
		runWorkers(t, c, []Target{{DatasetID: "ds", Table: "a"}}, 8, 10, 10*time.Second)
		ratio := func(quota string) float64 {
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			for _, mf := range mfs {
				if mf.GetName() != "pushd_powerbi_quota_used_ratio" {
					continue
				}
				for _, mm := range mf.GetMetric() {
					labels := map[string]string{}
					for _, l := range mm.GetLabel() {
						labels[l.GetName()] = l.GetValue()
					}
					if labels["dataset"] == "ds" && labels["quota"] == quota {
						return mm.GetGauge().GetValue()
					}
				}
			}
			t.Fatalf("no pushd_powerbi_quota_used_ratio{dataset=ds,quota=%s}", quota)
			return 0
		}
		// Requests bind: 50 per 10s of 10 rows use about half the rows
		// quota (1000 per 10s); 100ms answers 200ms apart keep one of
		// five slots busy.
		if got := ratio("requests"); got < 0.9 {
			t.Errorf("requests used ratio under a backlog = %v, want >= 0.9", got)
		}
		if got := ratio("rows"); got < 0.4 || got > 0.6 {
			t.Errorf("rows used ratio = %v, want about 0.5", got)
		}
		if got := ratio("in_flight"); got < 0.2 || got > 1 {
			t.Errorf("in_flight used ratio = %v, want 0.2..1", got)
		}
		time.Sleep(11 * time.Second)
		for _, q := range []string{"requests", "rows", "in_flight"} {
			if got := ratio(q); got != 0 {
				t.Errorf("%s used ratio after an idle window = %v, want 0", q, got)
			}
		}
	})
}

// TestShareRaiseWaitsAWindow: a process whose share grows (another process
// writing the dataset left) keeps to its old share for one window, the time
// the other process's last requests need to leave Power BI's window; a
// share that shrinks applies at once.
func TestShareRaiseWaitsAWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{steps: []func(http.ResponseWriter, *http.Request){ok}}
		c := syncClient(t, s, Limits{RequestsPerMinute: 10, RequestWindow: 2 * time.Second})
		tgts := []Target{{DatasetID: "ds", Table: "a"}}
		c.SetShare("ds", 0.5)
		runWorkers(t, c, tgts, 4, 1, 4*time.Second)
		changed := time.Now()
		c.SetShare("ds", 1)
		runWorkers(t, c, tgts, 4, 1, 6*time.Second)
		reqs := s.requests()
		var before []recorded // arrived within a window after the change
		for _, r := range reqs {
			if r.at.Before(changed.Add(2 * time.Second)) {
				before = append(before, r)
			}
		}
		at, w := weights(before, false)
		if got := maxInWindow(at, w, 2*time.Second); got > 5 {
			t.Errorf("a window ending within one window of the raise held %d requests, want <= 5 (the old share)", got)
		}
		at, w = weights(reqs, false)
		if got := maxInWindow(at, w, 2*time.Second); got != 10 {
			t.Errorf("busiest window after the raise took effect = %d, want 10", got)
		}
		c.SetShare("ds", 0.5)
		lowered := time.Now()
		runWorkers(t, c, tgts, 4, 1, 6*time.Second)
		var after []recorded
		for _, r := range s.requests() {
			if r.at.After(lowered) {
				after = append(after, r)
			}
		}
		at, w = weights(after, false)
		if got := maxInWindow(at, w, 2*time.Second); got > 5 {
			t.Errorf("after lowering the share a window held %d requests of its own, want <= 5", got)
		}
	})
}
